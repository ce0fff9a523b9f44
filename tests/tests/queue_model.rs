//! State-machine property test of the Redis queue against a model: random sequences of
//! enqueue / fetch / ack / fail / kill / stale ack / clock advance (lease expiry and
//! reaping), on a real redis-server. Nothing is lost; nothing is acknowledged twice
//! unless its lease expired (a crash) in between.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aftercall_core::{CallEvent, RetryPolicy};
use aftercall_queue::{Finish, FinishMode, Queue, QueueConfig, StateInfo};
use aftercall_testkit::{RedisOptions, RedisServer};
use proptest::prelude::*;

const LEASE: Duration = Duration::from_millis(1000);
const MAX: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(usize),
    Fetch { worker: usize, batch: usize },
    Ack(usize),
    Fail(usize),
    Kill(usize),
    StaleAck(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..4).prop_map(Op::Enqueue),
        (0usize..3, 1usize..5).prop_map(|(worker, batch)| Op::Fetch { worker, batch }),
        any::<usize>().prop_map(Op::Ack),
        any::<usize>().prop_map(Op::Fail),
        any::<usize>().prop_map(Op::Kill),
        any::<usize>().prop_map(Op::StaleAck),
        (0i64..2500).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum St {
    Ready,
    Leased { token: String, deadline: i64 },
    Scheduled(i64),
    Done,
    Dead,
}

#[derive(Default)]
struct Model {
    jobs: BTreeMap<String, (St, u32)>,
    stale_tokens: Vec<(String, String)>,
    acks: BTreeMap<String, u32>,
    expiries: BTreeMap<String, u32>,
}

impl Model {
    fn ids(&self, f: impl Fn(&St) -> bool) -> BTreeSet<String> {
        self.jobs
            .iter()
            .filter(|(_, (s, _))| f(s))
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn leased(&self) -> Vec<(String, String)> {
        self.jobs
            .iter()
            .filter_map(|(k, (s, _))| {
                if let St::Leased { token, .. } = s {
                    Some((k.clone(), token.clone()))
                } else {
                    None
                }
            })
            .collect()
    }
    /// What fetch's promotion and reaping do before popping.
    fn tick(&mut self, now: i64) {
        for (id, (s, attempts)) in self.jobs.iter_mut() {
            match s.clone() {
                St::Scheduled(at) if at <= now => *s = St::Ready,
                St::Leased { token, deadline } if deadline <= now => {
                    self.stale_tokens.push((id.clone(), token));
                    *self.expiries.entry(id.clone()).or_default() += 1;
                    *s = if *attempts >= MAX {
                        St::Dead
                    } else {
                        St::Ready
                    };
                }
                _ => {}
            }
        }
    }
}

async fn snapshot(q: &Queue, redis_url: &str) -> BTreeMap<&'static str, BTreeSet<String>> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    aftercall_tests::job_places(q, &mut c)
        .await
        .into_iter()
        .map(|(place, ids)| (place, ids.into_iter().collect()))
        .collect()
}

fn finish(mode: FinishMode, id: &str, token: &str, run_at_ms: i64) -> Finish {
    Finish {
        mode,
        id: id.into(),
        token: token.into(),
        run_at_ms,
        // The model checks which finishes apply, not what they record.
        state: StateInfo::new(aftercall_core::JobState::Delivered),
        attempt: None,
    }
}

async fn run_case(ops: Vec<Op>, redis_url: String, case: u64) {
    let retry = RetryPolicy {
        max_attempts: MAX,
        ..RetryPolicy::default()
    };
    let q = Queue::connect(QueueConfig {
        url: redis_url.clone(),
        prefix: format!("model{case}"),
        retry,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut m = Model::default();
    let mut now = aftercall_queue::now_ms();
    let mut calls = 0usize;
    for op in ops {
        match op {
            Op::Enqueue(n) => {
                let events: Vec<CallEvent> = (0..n)
                    .map(|_| {
                        calls += 1;
                        CallEvent::parse(
                            format!(r#"{{"call_id":"c{calls}","agent_id":"a"}}"#).as_bytes(),
                            1 << 20,
                        )
                        .unwrap()
                    })
                    .collect();
                for e in q.enqueue(events).await.unwrap() {
                    assert!(!e.duplicate);
                    m.jobs.insert(e.job_id, (St::Ready, 0));
                }
            }
            Op::Fetch { worker, batch } => {
                m.tick(now);
                let ready_before = m.ids(|s| *s == St::Ready);
                let got = q
                    .fetch_at(&format!("w{worker}"), batch, LEASE, now)
                    .await
                    .unwrap();
                assert_eq!(
                    got.jobs.len(),
                    batch.min(ready_before.len()),
                    "fetch takes what is ready, up to the batch"
                );
                for j in got.jobs {
                    assert!(
                        ready_before.contains(j.id.as_str()),
                        "fetched {} which was not ready",
                        j.id
                    );
                    let entry = m.jobs.get_mut(j.id.as_str()).unwrap();
                    entry.1 += 1;
                    assert_eq!(j.attempt, entry.1, "attempts counted at fetch");
                    entry.0 = St::Leased {
                        token: j.token.into(),
                        deadline: now + LEASE.as_millis() as i64,
                    };
                }
            }
            Op::Ack(i) | Op::Fail(i) | Op::Kill(i) => {
                let leased = m.leased();
                if leased.is_empty() {
                    continue;
                }
                let (id, token) = &leased[i % leased.len()];
                let (mode, next) = match op {
                    Op::Ack(_) => (FinishMode::Done, St::Done),
                    Op::Fail(_) => (FinishMode::Retry, St::Scheduled(now + 100)),
                    _ => (FinishMode::Dead, St::Dead),
                };
                let run_at = if let St::Scheduled(at) = next { at } else { 0 };
                let applied = q.finish(&[finish(mode, id, token, run_at)]).await.unwrap();
                assert_eq!(
                    applied,
                    [true],
                    "the holder of a live lease may finish the job"
                );
                if mode == FinishMode::Done {
                    *m.acks.entry(id.clone()).or_default() += 1;
                }
                m.jobs.get_mut(id).unwrap().0 = next;
            }
            Op::StaleAck(i) => {
                if m.stale_tokens.is_empty() {
                    continue;
                }
                let (id, token) = m.stale_tokens[i % m.stale_tokens.len()].clone();
                let applied = q
                    .finish(&[finish(FinishMode::Done, &id, &token, 0)])
                    .await
                    .unwrap();
                assert_eq!(
                    applied,
                    [false],
                    "an expired lease's token must not finish the job"
                );
            }
            Op::Advance(ms) => now += ms,
        }
        let snap = snapshot(&q, &redis_url).await;
        assert_eq!(snap["ready"], m.ids(|s| *s == St::Ready), "ready");
        assert_eq!(
            snap["running"],
            m.ids(|s| matches!(s, St::Leased { .. })),
            "running"
        );
        assert_eq!(
            snap["scheduled"],
            m.ids(|s| matches!(s, St::Scheduled(_))),
            "scheduled"
        );
        assert_eq!(snap["dead"], m.ids(|s| *s == St::Dead), "dead");
        assert_eq!(snap["done"], m.ids(|s| *s == St::Done), "done");
    }
    // Drain: every job ends delivered or dead; none is lost.
    for _ in 0..50 {
        now += 5_000;
        m.tick(now);
        let got = q.fetch_at("drain", 1000, LEASE, now).await.unwrap();
        for j in &got.jobs {
            assert_eq!(
                q.finish(&[finish(FinishMode::Done, &j.id, &j.token, 0)])
                    .await
                    .unwrap(),
                [true]
            );
            *m.acks.entry(j.id.to_string()).or_default() += 1;
            m.jobs.get_mut(j.id.as_str()).unwrap().0 = St::Done;
        }
        if m.jobs
            .values()
            .all(|(s, _)| matches!(s, St::Done | St::Dead))
        {
            break;
        }
    }
    let snap = snapshot(&q, &redis_url).await;
    assert_eq!(
        snap["done"].len() + snap["dead"].len(),
        m.jobs.len(),
        "nothing lost"
    );
    for (id, n) in &m.acks {
        assert_eq!(*n, 1, "{id} acknowledged {n} times");
    }
}

#[test]
fn queue_matches_its_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("aftercall-model-{}", std::process::id()));
    let redis = rt
        .block_on(RedisServer::start(
            &dir,
            RedisOptions {
                aof: false,
                ..Default::default()
            },
        ))
        .unwrap();
    let url = redis.url();
    let cases: u32 = std::env::var("AFTERCALL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(run_case(ops, url.clone(), n));
            Ok(())
        })
        .unwrap();
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}
