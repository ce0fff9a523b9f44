//! Redis Cluster: a real 3-primary, 3-replica cluster on loopback ports, started here.
//! The queue works unchanged on it (one hash tag per queue), including retries, dead
//! letters and replay, and a failover of the primary that owns the queue loses no
//! acknowledged event.

use std::process::Command;
use std::time::{Duration, Instant};

use aftercall_core::CallEvent;
use aftercall_queue::{Queue, QueueConfig};
use aftercall_testkit::{Cluster, ClusterOptions};
use aftercall_tests::{
    Receiver, Reply, agent_config, assert_all, assert_job, bin, call_event, settled, store_agent,
};
use serde_json::json;

async fn start_cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!(
        "aftercall-cluster-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Cluster::start(&dir, ClusterOptions::default())
        .await
        .expect("a 3-primary, 3-replica cluster")
}

fn slot_of(c: &Cluster, key: &str) -> u16 {
    c.slot_of(key)
}

fn worker(c: &Cluster, prefix: &str, extra: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(bin("aftercall-worker"));
    cmd.env("AFTERCALL_REDIS_URL", c.urls())
        .env("AFTERCALL_REDIS_CLUSTER", "true")
        .env("AFTERCALL_QUEUE_PREFIX", prefix)
        .env("AFTERCALL_ALLOW_CIDRS", "127.0.0.0/8")
        .env("AFTERCALL_RETRY_BASE", "100ms")
        .env("AFTERCALL_RETRY_FACTOR", "2")
        .env("AFTERCALL_MAX_ATTEMPTS", "3")
        .env("AFTERCALL_LEASE", "2s")
        .env("AFTERCALL_OUTBOX", c.dir.join("outbox"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(c.dir.join(format!("worker-{prefix}.log"))).unwrap());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("worker")
}

async fn queue(c: &Cluster, prefix: &str, wait_replicas: u32) -> Queue {
    Queue::connect(QueueConfig {
        url: c.urls(),
        cluster: true,
        prefix: prefix.into(),
        wait_replicas,
        ..Default::default()
    })
    .await
    .expect("cluster connect")
}

async fn wait_settled(q: &Queue, call_id: &str) -> aftercall_queue::CallStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(s)) = q.call_status(call_id).await
            && (settled(&s) || Instant::now() > deadline)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{call_id} never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_round_trip_retries_dead_letters_replay_and_failover() {
    let c = start_cluster().await;

    // Two queues on the cluster, on different slots: several queues spread over nodes.
    let (pa, pb) = ("tenant-a", "tenant-b");
    assert_ne!(
        slot_of(&c, &format!("{{{pa}}}:ready")),
        slot_of(&c, &format!("{{{pb}}}:ready"))
    );

    let rx = Receiver::start().await.unwrap();
    let qa = queue(&c, pa, 1).await;
    let body = aftercall_tests::fixture("seed-agent.json")
        .replace("https://your-crm.com/api/call-completed", &rx.url);
    store_agent(&qa, "agent_abc123", &body).await;
    let mut w = worker(&c, pa, &[]);

    // Seed round trip.
    qa.enqueue(vec![
        CallEvent::parse(
            aftercall_tests::fixture("seed-call.json").as_bytes(),
            1 << 20,
        )
        .unwrap(),
    ])
    .await
    .unwrap();
    let s = wait_settled(&qa, "call_xyz789").await;
    assert_all(&s, "delivered");
    assert_eq!(rx.count(), 1);

    // Retries then a dead letter, then replay to delivery.
    let rx2 = Receiver::answering(Reply::status(503)).await;
    let hook = agent_config(None, json!([{"type": "webhook", "url": rx2.url}]));
    store_agent(&qa, "a2", &hook).await;
    qa.enqueue(vec![
        CallEvent::parse(call_event("c-dead", "a2").as_bytes(), 1 << 20).unwrap(),
    ])
    .await
    .unwrap();
    let s = wait_settled(&qa, "c-dead").await;
    assert_eq!(
        s.actions.len(),
        1,
        "fan-out: {:?} {:?}",
        s.call_ended.state,
        s.call_ended.history
    );
    assert_job(&s.actions[0], "dead", 3);
    rx2.set_default(Reply::status(200));
    assert_eq!(qa.replay(&[s.actions[0].id.clone()]).await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while qa.job(&s.actions[0].id).await.unwrap().unwrap().state.state != "delivered" {
        assert!(Instant::now() < deadline, "replay not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Failover: stop the worker, enqueue with WAIT 1 (acknowledged = on a replica), kill
    // the primary owning the queue, and check every acknowledged event survived.
    let _ = w.kill();
    let _ = w.wait();
    let events: Vec<CallEvent> = (0..200)
        .map(|i| CallEvent::parse(call_event(&format!("f{i}"), "a2").as_bytes(), 1 << 20).unwrap())
        .collect();
    let acked = qa.enqueue(events).await.unwrap();
    assert_eq!(acked.len(), 200);
    let slot = slot_of(&c, &format!("{{{pa}}}:ready"));
    let mut c = c;
    c.fail_over(slot)
        .await
        .expect("the queue's replica takes over");
    let qa = queue(&c, pa, 0).await;
    let mut w = worker(&c, pa, &[]);
    for e in &acked {
        let s = wait_settled(&qa, &e.call_id).await;
        assert_eq!(
            s.actions[0].state.state, "delivered",
            "{} lost or stuck after failover",
            e.call_id
        );
    }
    let _ = w.kill();
    let _ = w.wait();

    // The other queue is independent and works on its own slot.
    let qb = queue(&c, pb, 0).await;
    assert_eq!(qb.stats().await.unwrap().calls, 0);
}

/// The MEMORY USAGE of `key`, asked of the node serving it.
fn memory_usage(c: &Cluster, key: &str) -> u64 {
    let node = c.primary_for(slot_of(c, key)).expect("a primary serves it");
    Cluster::cli(
        c.nodes[node].port(),
        &["MEMORY", "USAGE", key, "SAMPLES", "0"],
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_spread_a_queue_over_the_primaries_and_survive_a_failover() {
    let c = start_cluster().await;
    let prefix = "spread";
    let q = Queue::connect(QueueConfig {
        url: c.urls(),
        cluster: true,
        prefix: prefix.into(),
        wait_replicas: 1,
        partitions: 3,
        ..Default::default()
    })
    .await
    .expect("cluster connect");
    assert_eq!(q.partitions(), 3);

    // Each partition's hash tag is served by its own primary.
    let slots: Vec<u16> = (0..3)
        .map(|p| slot_of(&c, &q.partition(p).keys().ready))
        .collect();
    let mut primaries: Vec<usize> = slots.iter().map(|s| c.primary_for(*s).unwrap()).collect();
    primaries.sort();
    primaries.dedup();
    assert_eq!(primaries.len(), 3, "slots {slots:?}");

    let rx = Receiver::start().await.unwrap();
    let hook = agent_config(None, json!([{"type": "webhook", "url": rx.url}]));
    store_agent(&q, "a1", &hook).await;

    // 3,000 calls, acknowledged once a replica has them (WAIT on each partition's primary).
    let events: Vec<CallEvent> = (0..3000)
        .map(|i| CallEvent::parse(call_event(&format!("p{i}"), "a1").as_bytes(), 1 << 20).unwrap())
        .collect();
    let acked = q.enqueue(events).await.unwrap();
    assert_eq!(acked.len(), 3000);

    // The queue's memory is spread over the three primaries within ±15 %.
    let per_primary: Vec<u64> = (0..3)
        .map(|p| {
            let part = q.partition(p);
            let k = part.keys();
            [&k.data, &k.state, &k.calls, &k.ready]
                .iter()
                .map(|key| memory_usage(&c, key))
                .sum()
        })
        .collect();
    eprintln!("queue memory per primary (bytes): {per_primary:?}");
    let mean = per_primary.iter().sum::<u64>() as f64 / 3.0;
    for m in &per_primary {
        assert!(
            (*m as f64 - mean).abs() <= 0.15 * mean,
            "memory per primary {per_primary:?}"
        );
    }

    // The primary of partition 1 fails: its replica takes over with every acknowledged
    // event, and a worker with the same count delivers all of them.
    let mut c = c;
    c.fail_over(slots[1])
        .await
        .expect("partition 1's replica takes over");
    let q = Queue::connect(QueueConfig {
        url: c.urls(),
        cluster: true,
        prefix: prefix.into(),
        partitions: 3,
        ..Default::default()
    })
    .await
    .expect("reconnect");
    let mut w = worker(&c, prefix, &[("AFTERCALL_PARTITIONS", "3")]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = q.stats().await.unwrap();
        if s.calls == 3000 && s.queued + s.running + s.scheduled + s.dead == 0 && rx.count() >= 3000
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all delivered: {s:?}, {} received",
            rx.count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for e in acked.iter().step_by(97) {
        let s = wait_settled(&q, &e.call_id).await;
        assert_eq!(s.actions[0].state.state, "delivered", "{}", e.call_id);
    }
    let _ = w.kill();
    let _ = w.wait();
}
