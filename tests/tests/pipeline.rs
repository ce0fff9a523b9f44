//! End to end: real redis-server, real HTTP receivers, the built worker and CLI binaries.

use std::time::Duration;

use aftercall_tests::{
    Receiver, Reply, World, action_states, agent_config, assert_all, assert_failed_with,
    assert_job, assert_prints, call_event, fixture, poll, settled, stderr, stdout, store_agent,
};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn seed_round_trip_delivers_the_seed_payload() {
    let w = World::new().await;
    let rx = Receiver::start().await.unwrap();
    // Configure through the CLI, with the seed's body byte for byte (URL pointed here).
    let body = fixture("seed-agent.json").replace(
        "https://your-crm.com/api/call-completed",
        &format!("{}/api/call-completed", rx.url),
    );
    let out = w.cli_set_agent("agent_abc123", &body);
    assert!(out.status.success(), "{}", stderr(&out));
    let _worker = w.worker();
    let out = w.cli(&["enqueue", "-"], &fixture("seed-call.json"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_prints(&out, "enqueued  call_xyz789");

    let got = rx.wait_for(1, T).await;
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/call-completed")
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    // Snapshot: exactly the seed's payload (same fields, same order); only the transcript
    // differs, since the seed elides it as "...".
    let call: serde_json::Value = serde_json::from_str(&fixture("seed-call.json")).unwrap();
    let mut expected: serde_json::Value =
        serde_json::from_str(&fixture("seed-webhook-payload.json")).unwrap();
    expected["transcript"] = call["transcript"].clone();
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        serde_json::to_string(&expected).unwrap()
    );

    let status = w.wait_call("call_xyz789", T, settled).await;
    assert_eq!(
        action_states(&status),
        [
            ("sms", "delivered"),
            ("webhook", "delivered"),
            ("email", "delivered")
        ]
    );
    let out = w.cli(&["calls", "show", "call_xyz789"], "");
    assert!(
        stdout(&out).contains("webhook") && stdout(&out).contains("delivered"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_with_growing_gaps_and_a_stable_delivery_id() {
    let mut w = World::new().await;
    // Gaps of about 200 ms then 600 ms (±20 %): far enough apart to tell on a busy machine.
    w.set("AFTERCALL_RETRY_FACTOR", "3");
    let rx = w.receiver_for("a1", Reply::ok()).await;
    rx.script([Reply::status(500), Reply::status(500), Reply::status(200)]);
    let _worker = w.worker();
    w.push("c1", "a1").await;
    let got = rx.wait_for(3, T).await;
    assert_eq!(got.len(), 3, "three attempts");
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "same delivery id on every attempt: {ids:?}"
    );
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(gap1 >= Duration::from_millis(150), "first gap {gap1:?}");
    assert!(gap2 > gap1, "gaps grow: {gap1:?} then {gap2:?}");
    let s = w.wait_call("c1", T, settled).await;
    let a = &s.actions[0];
    assert_job(a, "delivered", 3);
    assert_eq!(
        a.history.iter().map(|h| h.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let w = World::new().await;
    let rx = w.receiver_for("a1", Reply::ok()).await;
    rx.script([
        Reply::status(429).header("retry-after", "2"),
        Reply::status(200),
    ]);
    let _worker = w.worker();
    w.push("c1", "a1").await;
    let got = rx.wait_for(2, T).await;
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "waited {gap:?}, server asked for 2 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_dead_lettered_at_once_with_status_and_body() {
    let w = World::new().await;
    let refusal = Reply::status(400).body(r#"{"error":"missing field crm_id"}"#);
    let (rx, _worker) = w.serving("a1", refusal).await;
    let s = w.push_settled("c1", "a1", T).await;
    let a = &s.actions[0];
    assert_job(a, "dead", 1);
    assert_eq!(rx.count(), 1);
    let out = w.cli(&["dlq", "show", &a.id], "");
    let text = stdout(&out);
    assert!(
        text.contains("HTTP 400") && text.contains("missing field crm_id"),
        "{text}"
    );
    assert_eq!(w.dead_letters_by_error("http_4xx").len(), 1);
    let out = w.cli(&["dlq", "list", "--action", "email"], "");
    assert_prints(&out, "no dead letters");
    // Purge needs a selection; a filter that matches nothing purges nothing.
    let out = w.cli(&["dlq", "purge"], "");
    assert!(
        !out.status.success() && stderr(&out).contains("name job ids, a filter, or --all"),
        "{}",
        stderr(&out)
    );
    let out = w.cli(&["dlq", "purge", "--action", "sms"], "");
    assert_prints(&out, "0 dead letter(s) purged");
    let out = w.cli(&["dlq", "purge", "--agent", "a1"], "");
    assert_prints(&out, "1 dead letter(s) purged");
    let s = w.status("c1").await;
    assert_eq!(
        s.actions[0].state.state, "purged",
        "the call's history says so"
    );
    assert_eq!(w.queue.stats().await.unwrap().dead, 0);
}

/// Hardening item 1: `--error ""` (or any blank filter flag) is no filter, so it needs
/// `--all` like no filter at all; `--dry-run` says how many would be touched and touches
/// none.
#[tokio::test(flavor = "multi_thread")]
async fn a_blank_filter_needs_all_and_a_dry_run_touches_nothing() {
    let w = World::new().await;
    let (_rx, _worker) = w.serving("a1", Reply::status(400)).await;
    for c in ["c1", "c2"] {
        w.push(c, "a1").await;
        w.wait_call(c, T, settled).await;
    }
    assert_eq!(w.queue.stats().await.unwrap().dead, 2);
    for verb in ["purge", "replay"] {
        for args in [
            vec!["--error", ""],
            vec!["--error", "  "],
            vec!["--agent", "", "--action", " ", "--since", "", "--until", ""],
            vec!["--error", "", "--dry-run"],
        ] {
            let mut argv = vec!["dlq", verb];
            argv.extend(args.iter().copied());
            let out = w.cli(&argv, "");
            assert!(
                !out.status.success() && stderr(&out).contains("name job ids, a filter, or --all"),
                "{argv:?}: {}",
                stderr(&out)
            );
            assert_eq!(w.queue.stats().await.unwrap().dead, 2, "{argv:?}");
        }
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &["dlq", "purge", "--all", "--dry-run"],
            "would purge 2 dead letter(s)",
        ),
        (
            &["dlq", "replay", "--all", "--dry-run"],
            "would replay 2 dead letter(s)",
        ),
        (
            &[
                "dlq",
                "purge",
                "--error",
                "http_4xx",
                "--agent",
                "",
                "--dry-run",
            ],
            "would purge 2 dead letter(s)",
        ),
        (
            &["dlq", "purge", "--error", "timeout", "--dry-run"],
            "would purge 0 dead letter(s)",
        ),
    ];
    for (argv, want) in cases {
        let out = w.cli(argv, "");
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
        assert!(stdout(&out).contains(want), "{argv:?}: {}", stdout(&out));
    }
    let one = w.status("c1").await.actions[0].id.clone();
    let out = w.cli(&["dlq", "replay", &one, "job_nope", "--dry-run"], "");
    assert_prints(&out, "would replay 1 dead letter(s)");
    assert_eq!(
        w.queue.stats().await.unwrap().dead,
        2,
        "dry runs touch nothing"
    );
    let out = w.cli(&["dlq", "purge", "--all", "--error", ""], "");
    assert_prints(&out, "2 dead letter(s) purged");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_dead_letter_then_replay_delivers() {
    let w = World::with_env(&[
        ("AFTERCALL_MAX_ATTEMPTS", "3"),
        ("AFTERCALL_RETRY_BASE", "50ms"),
    ])
    .await;
    let (rx, _worker) = w.serving("a1", Reply::status(503)).await;
    let s = w.push_settled("c1", "a1", T).await;
    let a = &s.actions[0];
    assert_job(a, "dead", 3);
    assert_eq!(a.history.len(), 3, "every attempt kept");
    assert!(
        a.state
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts")
    );

    rx.set_default(Reply::status(200));
    let out = w.cli(&["dlq", "replay", &a.id], "");
    assert_prints(&out, "1 dead letter(s) replayed");
    let s = w
        .wait_call("c1", T, |s| s.actions[0].state.state == "delivered")
        .await;
    assert_eq!(s.actions[0].state.state, "delivered");
    assert_eq!(rx.count(), 4);
    assert_eq!(
        w.queue.stats().await.unwrap().dead,
        0,
        "the dead letter is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn same_call_twice_is_one_delivery() {
    let w = World::new().await;
    let (rx, _worker) = w.serving("a1", Reply::ok()).await;
    let ev = call_event("dup1", "a1");
    let first = w.cli(&["enqueue"], &ev);
    let second = w.cli(&["enqueue"], &ev);
    assert!(
        stdout(&first).contains("1 enqueued, 0 duplicate"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&second).contains("0 enqueued, 1 duplicate"),
        "{}",
        stdout(&second)
    );
    w.wait_call("dup1", T, settled).await;
    // A third push after delivery is still a duplicate, and nothing more arrives.
    let third = w.cli(&["enqueue"], &ev);
    assert!(stdout(&third).contains("1 duplicate"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1);
}

/// The job data goes in beside the enqueue script, in one MULTI: a duplicate (in a
/// batch, or of an earlier call) leaves no data behind, and a Redis that lost its
/// scripts (restart, failover) still takes the enqueue.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_leave_no_data_behind_and_a_flushed_script_cache_is_reloaded() {
    let w = World::new().await;
    let ev = |id: &str| {
        aftercall_core::CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap()
    };
    let first = w
        .queue
        .enqueue(vec![ev("d1"), ev("d2"), ev("d1")])
        .await
        .unwrap();
    let dup: Vec<bool> = first.iter().map(|e| e.duplicate).collect();
    assert_eq!(dup, [false, false, true]);
    assert_eq!(
        first[2].job_id, first[0].job_id,
        "the duplicate names the first job"
    );
    // One at a time (the single-event path), then in a batch again.
    let again = w.queue.enqueue(vec![ev("d2")]).await.unwrap();
    assert!(again[0].duplicate && again[0].job_id == first[1].job_id);
    w.queue.enqueue(vec![ev("d1"), ev("d3")]).await.unwrap();
    let mut raw = w.raw().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    let after_flush = w.queue.enqueue(vec![ev("d4")]).await.unwrap();
    assert!(!after_flush[0].duplicate);
    let data: usize = redis::cmd("HLEN")
        .arg(&w.queue.keys().data)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(data, 4, "one job's data per distinct call");
    let audit = w.audit_clean().await;
    assert_eq!(audit.count("call_ended:queued"), 4);
}

/// A batch larger than one script call: the script answers for duplicates only, by
/// their place in the chunk, and each must land on its own event in the producer's reply.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_across_chunks_are_answered_in_place() {
    let w = World::new().await;
    let ev = |id: String| {
        aftercall_core::CallEvent::parse(call_event(&id, "a1").as_bytes(), 1 << 20).unwrap()
    };
    w.queue
        .enqueue(vec![ev("c7".into()), ev("c9".into())])
        .await
        .unwrap();
    // 1,200 events in three chunks; every 100th repeats an event 450 places earlier
    // (so in the chunk before), and c7 and c9 were enqueued above.
    let ids: Vec<String> = (0..1200)
        .map(|i| match i {
            i if i % 100 == 99 && i >= 450 => format!("c{}", i - 450),
            i => format!("c{i}"),
        })
        .collect();
    let out = w
        .queue
        .enqueue(ids.iter().cloned().map(ev).collect())
        .await
        .unwrap();
    assert_eq!(out.len(), ids.len());
    let mut first_job = std::collections::HashMap::new();
    for (i, (e, id)) in out.iter().zip(&ids).enumerate() {
        assert_eq!(&e.call_id, id, "event {i} answered in its place");
        let expect_dup = (i % 100 == 99 && i >= 450) || id == "c7" || id == "c9";
        assert_eq!(e.duplicate, expect_dup, "event {i} ({id})");
        if let Some(prev) = first_job.get(id) {
            assert_eq!(&e.job_id, prev, "event {i} names the first job of {id}");
        } else {
            first_job.insert(id.clone(), e.job_id.clone());
        }
    }
    let audit = w.audit_clean().await;
    assert_eq!(audit.count("call_ended:queued"), first_job.len());
}

/// Single events from concurrent producers (the HTTP ingest's shape) go to Redis
/// together: each producer gets its own answer, and one call pushed by many producers at
/// once is enqueued exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_single_enqueues_go_together_and_stay_idempotent() {
    fn ev(id: &str) -> aftercall_core::CallEvent {
        aftercall_core::CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap()
    }
    let w = World::new().await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let q = w.queue.clone();
        let id = if i % 4 == 0 {
            "same".to_string()
        } else {
            format!("c{i}")
        };
        tasks.push(tokio::spawn(async move {
            let got = q.enqueue(vec![ev(&id)]).await.unwrap().remove(0);
            (id, got)
        }));
    }
    let mut same = Vec::new();
    for t in tasks {
        let (id, got) = t.await.unwrap();
        assert_eq!(got.call_id, id, "each producer gets its own answer");
        if id == "same" {
            same.push(got);
        } else {
            assert!(!got.duplicate, "{id}");
        }
    }
    assert_eq!(same.len(), 100);
    assert_eq!(same.iter().filter(|e| !e.duplicate).count(), 1);
    assert!(same.iter().all(|e| e.job_id == same[0].job_id));
    let audit = w.audit_clean().await;
    assert_eq!(audit.count("call_ended:queued"), 301);
    // Sent together: far fewer script calls than producers.
    let calls: usize = w
        .info("commandstats")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        calls > 0 && calls < 200,
        "{calls} script calls for 400 events"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_field_and_nothing_is_written() {
    let w = World::new().await;
    let cases: &[(&str, &str)] = &[
        ("{not json", "line 1"),
        (
            r#"{"call_id":"c","agent_id":"a","colour":"red"}"#,
            "colour: unknown field `colour`",
        ),
        (r#"{"agent_id":"a"}"#, "missing field `call_id`"),
        (
            r#"{"call_id":"c","agent_id":"a","caller_number":"12"}"#,
            "caller_number:",
        ),
    ];
    for (input, want) in cases {
        let out = w.cli(&["enqueue"], input);
        assert!(!out.status.success(), "{input} accepted");
        assert!(stderr(&out).contains(want), "{input}: {}", stderr(&out));
    }
    // JSON Lines with one bad line: nothing from the file is enqueued.
    let lines = format!(
        "{}\n{}\n{{\"call_id\":\"x\"}}\n",
        call_event("ok1", "a"),
        call_event("ok2", "a")
    );
    let out = w.cli(&["enqueue"], &lines);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 3: agent_id")
            || stderr(&out).contains("line 3: missing field `agent_id`"),
        "{}",
        stderr(&out)
    );
    // Oversized event.
    let mut w2 = w;
    w2.set("AFTERCALL_MAX_EVENT_BYTES", "200");
    let big = format!(
        r#"{{"call_id":"big","agent_id":"a","summary":"{}"}}"#,
        "x".repeat(500)
    );
    let out = w2.cli(&["enqueue"], &big);
    assert!(
        stderr(&out).contains("over the limit of 200 bytes"),
        "{}",
        stderr(&out)
    );
    let stats = w2.queue.stats().await.unwrap();
    assert_eq!((stats.queued, stats.calls), (0, 0), "nothing enqueued");
    // --skip-invalid enqueues the good ones and exits 2.
    let out = w2.cli(&["enqueue", "--skip-invalid"], &lines);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(w2.queue.stats().await.unwrap().calls, 2);
    // A bad agent config names the field and stores nothing.
    let bad = w2.dir.join("bad.json");
    std::fs::write(&bad, r#"{"voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[{"type":"webhook","url":"not a url"}]}}}"#).unwrap();
    let out = w2.cli(
        &["agents", "set", "a9", "--file", bad.to_str().unwrap()],
        "",
    );
    assert!(
        stderr(&out).contains("voice_tools.post_call_follow_up.actions[0].url"),
        "{}",
        stderr(&out)
    );
    assert!(w2.queue.get_agent("a9").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn unconfigured_and_disabled_agents_are_visible_skips() {
    let w = World::new().await;
    let _worker = w.worker();
    let s = w.push_settled("c-none", "nobody", T).await;
    assert_eq!(s.call_ended.state.state, "skipped");
    assert!(
        s.call_ended
            .state
            .reason
            .as_deref()
            .unwrap()
            .contains("no configuration")
    );
}

/// Single events sent together share one outcome per call to Redis: with Redis down,
/// every waiting producer gets a transient error in bounded time, and once Redis is back
/// the next events go through (nothing is left stuck behind a failed call).
#[tokio::test(flavor = "multi_thread")]
async fn single_enqueues_fail_cleanly_while_redis_is_down_and_recover() {
    fn ev(id: String) -> aftercall_core::CallEvent {
        aftercall_core::CallEvent::parse(call_event(&id, "a1").as_bytes(), 1 << 20).unwrap()
    }
    /// 20 producers at once, one event each.
    fn producers(
        q: &aftercall_queue::Queue,
        prefix: &'static str,
    ) -> Vec<
        tokio::task::JoinHandle<
            Result<Vec<aftercall_queue::Enqueued>, aftercall_queue::QueueError>,
        >,
    > {
        (0..20)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move { q.enqueue(vec![ev(format!("{prefix}{i}"))]).await })
            })
            .collect()
    }
    let mut w = World::new().await;
    w.queue.enqueue(vec![ev("before".into())]).await.unwrap();
    w.redis.kill().await;
    let started = std::time::Instant::now();
    for t in producers(&w.queue, "down") {
        let got = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("not stuck");
        let err = got.unwrap().expect_err("Redis is down");
        assert!(err.is_transient(), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "bounded wait");
    w.redis.restart().await.unwrap();
    let back = poll(Duration::from_secs(10), || {
        let q = w.queue.clone();
        // A stuck batch would hang here: bounded, so it fails instead.
        async move {
            tokio::time::timeout(Duration::from_secs(5), q.enqueue(vec![ev("after".into())]))
                .await
                .expect("not stuck")
                .ok()
        }
    })
    .await
    .expect("enqueues go through again");
    assert!(!back[0].duplicate);
    for t in producers(&w.queue, "up") {
        let got = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("not stuck");
        assert!(!got.unwrap().unwrap()[0].duplicate);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_unreachable_fails_fast_and_workers_survive_a_restart() {
    let mut w = World::new().await;
    let (rx, mut worker) = w.serving("a1", Reply::ok()).await;
    w.push("before", "a1").await;
    assert_eq!(rx.wait_for(1, T).await.len(), 1);

    w.redis.kill().await;
    let started = std::time::Instant::now();
    let out = w.cli(&["enqueue"], &call_event("during", "a1"));
    assert_failed_with(&out, "aftercall: cannot reach Redis");
    assert_eq!(stderr(&out).lines().count(), 1, "one-line reason");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(worker.is_running(), "worker survives Redis going away");
    w.redis.restart().await.unwrap();
    let out = w.cli(&["enqueue"], &call_event("after", "a1"));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = rx.wait_for(2, T).await;
    assert_eq!(
        got.len(),
        2,
        "worker reconnected and delivered; log:\n{}",
        worker.log_text()
    );
    // The event acknowledged before the restart survived it (AOF, appendfsync always).
    // (This test's own connection reconnects on its next use after the restart.)
    let mut found = None;
    for _ in 0..20 {
        if let Ok(s) = w.queue.call_status("before").await {
            found = Some(s.is_some());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        found,
        Some(true),
        "the call pushed before the restart is still known"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_flight_loses_nothing() {
    let w = World::with_env(&[("AFTERCALL_LEASE", "1s"), ("AFTERCALL_CONCURRENCY", "8")]).await;
    // Slow receiver: the first worker dies with jobs in flight.
    let (rx, mut first) = w
        .busy_worker(Duration::from_millis(700), ("k", 30), 3, T)
        .await;
    first.kill9();
    let seen_at_kill = rx.count();
    let _second = w.worker();
    for s in w.settled_range("k", 0..30, Duration::from_secs(60)).await {
        assert_all(&s, "delivered");
    }
    let got = rx.received();
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every call delivered");
    // Duplicates only for jobs in flight at the kill (at most the first worker's concurrency),
    // and each carries the same delivery id.
    assert!(
        total - 30 <= 8,
        "{total} deliveries, {seen_at_kill} before the kill"
    );
    let stats = w.queue.stats().await.unwrap();
    assert_eq!((stats.dead, stats.running, stats.queued), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_jobs() {
    let mut w = World::new().await;
    w.set("AFTERCALL_CONCURRENCY", "4");
    let (_rx, mut worker) = w
        .busy_worker(Duration::from_millis(500), ("t", 12), 2, T)
        .await;
    let status = worker
        .terminate(Duration::from_secs(15))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "clean exit; log:\n{}", worker.log_text());
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(
        stats.running, 0,
        "nothing left leased: in-flight finished, the rest returned"
    );
    // A new worker finishes the rest; nothing is lost.
    let _next = w.worker();
    for s in w.settled_range("t", 0..12, T).await {
        assert_eq!(s.actions[0].state.state, "delivered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssrf_guard_blocks_private_targets_by_default() {
    let mut w = World::new().await;
    w.set("AFTERCALL_ALLOW_CIDRS", "");
    let (rx, _worker) = w.serving("a1", Reply::ok()).await;
    let s = w.push_settled("c1", "a1", T).await;
    let a = &s.actions[0];
    assert_job(a, "dead", 1);
    assert!(
        a.last_error().unwrap().contains("loopback"),
        "{:?}",
        a.last_error()
    );
    assert_eq!(rx.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_action_waits_its_delay_through_the_scheduled_set() {
    let w = World::new().await;
    let rx = Receiver::start().await.unwrap();
    let body = agent_config(
        None,
        json!([{"type": "webhook", "url": rx.url, "delay": "2s"}]),
    );
    store_agent(&w.queue, "a1", &body).await;
    let _worker = w.worker();
    let pushed = std::time::Instant::now();
    w.push("d1", "a1").await;
    let s = w.wait_call("d1", T, |s| !s.actions.is_empty()).await;
    assert_eq!(
        s.actions[0].state.state, "scheduled",
        "waits in the scheduled set"
    );
    let got = rx.wait_for(1, T).await;
    assert_eq!(got.len(), 1);
    let waited = got[0].at - pushed;
    assert!(
        waited >= Duration::from_secs(2),
        "delivered after {waited:?}, before its 2 s delay"
    );
    let s = w.wait_call("d1", T, settled).await;
    assert_job(&s.actions[0], "delivered", 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_producers_trace_is_carried_into_logs_and_continued_to_the_receiver() {
    let mut w = World::new().await;
    w.set("AFTERCALL_LOG_FORMAT", "json");
    let (rx, worker) = w.serving("a1", Reply::ok()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let ev = call_event("tr1", "a1").replacen(
        '{',
        &format!(r#"{{"traceparent":"00-{trace}-00f067aa0ba902b7-01","#),
        1,
    );
    let out = w.cli(&["enqueue"], &ev);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = rx.wait_for(1, T).await;
    let tp = got[0].header("traceparent").expect("traceparent header");
    assert!(
        tp.starts_with(&format!("00-{trace}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the delivery has a span of its own: {tp}"
    );
    w.wait_call("tr1", T, settled).await;
    let log = worker.log_text();
    assert!(
        log.contains(&format!(r#""trace_id":"{trace}""#)),
        "job spans carry the trace id:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_cut_off_by_the_grace_period_is_recorded_and_counted() {
    let mut w = World::new().await;
    w.set("AFTERCALL_GRACE", "1s");
    let rx = w.receiver_for("a1", Reply::ok()).await;
    rx.script([Reply::status(200).delay(Duration::from_secs(3))]);
    let mut worker = w.worker();
    w.push("g1", "a1").await;
    rx.wait_for(1, T).await;
    let status = worker
        .terminate(Duration::from_secs(10))
        .expect("exits after the grace period");
    assert!(status.success(), "{}", worker.log_text());
    let s = w.status("g1").await;
    let a = &s.actions[0];
    assert_job(a, "scheduled", 1);
    assert!(
        a.history[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("interrupted"),
        "{:?}",
        a.history
    );
    // The next worker delivers it as attempt 2, with the same delivery id.
    let _next = w.worker();
    let s = w.wait_call("g1", T, settled).await;
    assert_job(&s.actions[0], "delivered", 2);
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
}

/// A renewal that crosses a job's recorded outcome finds the lease gone. That is the job
/// finishing, not a lost lease: no warning under a normal load (before this was told
/// apart, a 100,000-event run logged about a hundred such warnings, and this test saw
/// hundreds).
#[tokio::test(flavor = "multi_thread")]
async fn outcomes_recorded_during_a_renewal_are_not_reported_as_lost_leases() {
    let mut w = World::new().await;
    // Renewals every third of a second, while thousands of outcomes are being recorded
    // (short enough to cross many of them, long enough that a slow machine's stall does
    // not expire a lease for real).
    w.set("AFTERCALL_LEASE", "1s");
    let (rx, mut worker) = w.serving("a1", Reply::ok()).await;
    w.enqueue_range("r", "a1", 0..3000).await;
    rx.wait_for(3000, Duration::from_secs(120)).await;
    let status = worker
        .terminate(Duration::from_secs(15))
        .expect("worker exits after SIGTERM");
    assert!(status.success());
    let log = worker.log_text();
    let renewals = log.matches("renewing leases").count();
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("lease lost")).collect();
    assert!(
        lost.is_empty(),
        "{} false lease-lost warnings, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert_eq!(renewals, 0, "no renewal failed");
    let stats = w.queue.stats().await.unwrap();
    assert_eq!((stats.dead, stats.running, stats.queued), (0, 0, 0));
}

/// Agent `a1` with one webhook action per entry of `delays` ("" = at once, or "1h").
async fn webhook_actions(q: &aftercall_queue::Queue, delays: &[&str]) {
    let actions = delays
        .iter()
        .map(|d| match d {
            &"" => json!({"type": "webhook", "url": "http://127.0.0.1:9/hook"}),
            d => json!({"type": "webhook", "url": "http://127.0.0.1:9/hook", "delay": d}),
        })
        .collect();
    let body = agent_config(None, serde_json::Value::Array(actions));
    store_agent(q, "a1", &body).await;
}

/// What worker `w1` leases by hand, as its fetch loop would: up to 10 jobs, for a minute.
async fn lease_jobs(q: &aftercall_queue::Queue) -> Vec<aftercall_queue::Leased> {
    q.fetch("w1", 10, Duration::from_secs(60))
        .await
        .unwrap()
        .jobs
}

/// The fan-out a worker holding `p` under `token` would record, as the runtime builds it.
fn fan_out_record(
    p: &aftercall_queue::Leased,
    token: &str,
    cfg: Option<&aftercall_core::AgentConfig>,
    claim: Option<(String, Duration)>,
) -> aftercall_queue::FanOutRecord {
    use aftercall_core::job::{FanOut, fan_out};
    use aftercall_core::{Attempt, AttemptOutcome, Job, JobBody};
    let job: Job = serde_json::from_str(&p.data).unwrap();
    let JobBody::CallEnded { event } = &job.body else {
        panic!("not a call-ended job")
    };
    let FanOut::Jobs(jobs) = fan_out(&job, event, cfg, chrono::Utc::now()) else {
        panic!("no actions")
    };
    aftercall_queue::FanOutRecord {
        parent_id: p.id.clone(),
        token: token.into(),
        call_id: job.call_id.clone(),
        jobs,
        state: aftercall_queue::StateInfo::new(aftercall_core::JobState::FannedOut),
        attempt: Attempt::new(1, AttemptOutcome::Delivered, chrono::Utc::now()),
        claim,
    }
}

/// A job's attempt budget is stored only when it is not the default (8): an absent one
/// reads as 8 in a fetch and in a job's record, and any other budget is kept as set.
#[tokio::test(flavor = "multi_thread")]
async fn a_budget_is_stored_only_when_it_is_not_the_default() {
    use aftercall_queue::{FannedOut, Queue, QueueConfig};
    let w = World::new().await;
    let three = Queue::connect(QueueConfig {
        retry: aftercall_core::RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        },
        ..w.queue.config().clone()
    })
    .await
    .unwrap();
    webhook_actions(&w.queue, &["", ""]).await;
    let ev = |id: &str| {
        aftercall_core::CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap()
    };
    let default = w.queue.enqueue(vec![ev("b1"), ev("b2")]).await.unwrap();
    let custom = three.enqueue(vec![ev("b3")]).await.unwrap();
    let stored = |id: String| {
        let w = &w;
        async move {
            let v: Option<String> = redis::cmd("HGET")
                .arg(&w.queue.keys().max)
                .arg(&id)
                .query_async(&mut w.raw().await)
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(stored(default[0].job_id.clone()).await, None);
    assert_eq!(stored(custom[0].job_id.clone()).await, Some("3".into()));
    let rec = w.queue.job(&default[0].job_id).await.unwrap().unwrap();
    assert_eq!(rec.max_attempts, 8, "an absent budget reads as the default");
    let leased = lease_jobs(&w.queue).await;
    let budget = |call: &str| {
        let id = [&default[..], &custom[..]]
            .concat()
            .into_iter()
            .find(|e| e.call_id == call)
            .unwrap()
            .job_id;
        leased.iter().find(|l| l.id == id).unwrap().max_attempts
    };
    assert_eq!((budget("b1"), budget("b3")), (8, 3));
    // The fan-out stores its action jobs' budgets by the same rule.
    let cfg = w.queue.get_agent("a1").await.unwrap();
    let by = |call: &str| {
        leased
            .iter()
            .find(|l| l.data.contains(&format!(r#""call_id":"{call}""#)))
            .unwrap()
    };
    let r1 = fan_out_record(by("b1"), &by("b1").token, cfg.as_ref(), None);
    let r3 = fan_out_record(by("b3"), &by("b3").token, cfg.as_ref(), None);
    assert_eq!(
        w.queue
            .fan_out_many(std::slice::from_ref(&r1))
            .await
            .unwrap(),
        [FannedOut::Applied]
    );
    assert_eq!(
        three.fan_out_many(std::slice::from_ref(&r3)).await.unwrap(),
        [FannedOut::Applied]
    );
    assert_eq!(stored(r1.jobs[0].0.id.clone()).await, None);
    assert_eq!(stored(r3.jobs[1].0.id.clone()).await, Some("3".into()));
    let actions = lease_jobs(&w.queue).await;
    let mut budgets: Vec<u32> = actions.iter().map(|l| l.max_attempts).collect();
    budgets.sort();
    assert_eq!(budgets, [3, 3, 8, 8]);
    w.audit_clean().await;
}

/// Retention: a sweep forgets finished jobs and call ids older than the cutoff, in
/// bounded steps (call ids by whole enqueues: the four below went in together), and
/// leaves dead letters, running jobs and anything newer alone.
#[tokio::test(flavor = "multi_thread")]
async fn retention_forgets_old_finished_jobs_and_call_ids_only() {
    use aftercall_queue::{Finish, FinishMode, StateInfo};
    let w = World::new().await;
    let q = &w.queue;
    let ev = |id: &str| {
        aftercall_core::CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap()
    };
    let enq = q
        .enqueue(vec![ev("r1"), ev("r2"), ev("r3"), ev("r4")])
        .await
        .unwrap();
    let leased = lease_jobs(q).await;
    let by = |call: &str| {
        let id = &enq.iter().find(|e| e.call_id == call).unwrap().job_id;
        leased.iter().find(|l| &l.id == id).unwrap()
    };
    let finish = |call: &str, mode, state: aftercall_core::JobState| Finish {
        mode,
        id: by(call).id.clone(),
        token: by(call).token.clone(),
        run_at_ms: 0,
        state: StateInfo::new(state),
        attempt: None,
    };
    let done = [
        finish("r1", FinishMode::Done, aftercall_core::JobState::Delivered),
        finish("r2", FinishMode::Done, aftercall_core::JobState::Skipped),
        finish("r3", FinishMode::Dead, aftercall_core::JobState::Dead),
    ];
    assert_eq!(q.finish(&done).await.unwrap(), [true; 3]);
    // r4 stays running. Nothing is a minute old: a sweep with a minute's retention
    // forgets nothing.
    assert_eq!(q.sweep(Duration::from_secs(60), 1000).await.unwrap(), 0);
    // A retention longer than the clock's age (before 1970) is no error either.
    let ages = Duration::from_secs(80 * 365 * 86_400);
    assert_eq!(q.sweep(ages, 1000).await.unwrap(), 0);
    // Everything so far becomes older than the cutoff; r5 stays well inside it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = q.enqueue(vec![ev("r5")]).await.unwrap();
    let retention = Duration::from_millis(400);
    // Bounded: one finished job per step, and call ids until the limit is reached (the
    // four logged by one enqueue go together).
    assert_eq!(q.sweep(retention, 1).await.unwrap(), 1 + 4);
    assert_eq!(
        q.sweep(retention, 1000).await.unwrap(),
        1,
        "the other finished job"
    );
    assert_eq!(
        q.sweep(retention, 1000).await.unwrap(),
        0,
        "nothing old is left"
    );
    let job = |call: &str| q.job(&by(call).id);
    assert!(
        job("r1").await.unwrap().is_none(),
        "a delivered job is forgotten"
    );
    assert!(
        job("r2").await.unwrap().is_none(),
        "a skipped job is forgotten"
    );
    assert_eq!(
        job("r3").await.unwrap().unwrap().state.state,
        "dead",
        "dead letters stay"
    );
    assert_eq!(job("r4").await.unwrap().unwrap().state.state, "running");
    assert_eq!(
        q.stats().await.unwrap().calls,
        1,
        "only r5's call id is left"
    );
    // r5 (newer than the cutoff) is still known; r1 is not, so it is enqueued anew.
    let again = q.enqueue(vec![ev("r5"), ev("r1")]).await.unwrap();
    assert!(again[0].duplicate && again[0].job_id == fresh[0].job_id);
    assert!(!again[1].duplicate && again[1].job_id != by("r1").id);
}

/// The action jobs' data goes in by HSETNX beside the fan-out script: a fan-out that does
/// not apply (stale lease, the same call twice in a batch, a call that fanned out before)
/// leaves no data behind, and never rewrites the data of a job that exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_that_does_not_apply_leaves_no_data_behind() {
    use aftercall_queue::FannedOut;
    let w = World::new().await;
    let q = &w.queue;
    webhook_actions(q, &["", ""]).await;
    for c in ["c1", "c2", "c3"] {
        w.push(c, "a1").await;
    }
    let parents = lease_jobs(q).await;
    let cfg = q.get_agent("a1").await.unwrap();
    let record = |i: usize, token: &str| fan_out_record(&parents[i], token, cfg.as_ref(), None);
    let mut raw = w.raw().await;
    let data_key = q.keys().data.clone();
    let data_of = |ids: Vec<String>| {
        let (w, key) = (&w, data_key.clone());
        async move {
            let got: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(&ids)
                .query_async(&mut w.raw().await)
                .await
                .unwrap();
            got
        }
    };
    let ids = |r: &aftercall_queue::FanOutRecord| -> Vec<String> {
        r.jobs.iter().map(|(j, _)| j.id.clone()).collect()
    };
    // Batched: a stale lease, a fan-out, the same fan-out again.
    let recs = [
        record(0, "w9:1"),
        record(1, &parents[1].token),
        record(1, &parents[1].token),
    ];
    let got = q.fan_out_many(&recs).await.unwrap();
    assert_eq!(
        got,
        [FannedOut::Stale, FannedOut::Applied, FannedOut::Stale]
    );
    assert_eq!(data_of(ids(&recs[0])).await, [None, None], "stale: no data");
    let kept = data_of(ids(&recs[1])).await;
    assert!(
        kept.iter().all(Option::is_some),
        "the applied one keeps its data"
    );
    // A stale lease alone (the script's single-call path).
    let got = q.fan_out_many(&[record(2, "w9:1")]).await.unwrap();
    assert_eq!(got, [FannedOut::Stale]);
    assert_eq!(data_of(ids(&record(2, "w9:1"))).await, [None, None]);
    // c2 fanned out before: a parent that holds a lease again (as after a replay) and
    // now sees three actions creates nothing, rewrites nothing, and leaves no third.
    webhook_actions(q, &["", "", ""]).await;
    let cfg3 = q.get_agent("a1").await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&q.keys().lease)
        .arg(&parents[1].id)
        .arg("w2:2")
        .query_async(&mut raw)
        .await
        .unwrap();
    let again = fan_out_record(&parents[1], "w2:2", cfg3.as_ref(), None);
    assert_eq!(again.jobs.len(), 3);
    assert_eq!(
        q.fan_out_many(std::slice::from_ref(&again)).await.unwrap(),
        [FannedOut::Applied]
    );
    let after = data_of(ids(&again)).await;
    assert_eq!(after[..2], kept[..], "the existing jobs' data is untouched");
    assert_eq!(after[2], None, "no data for a job that was not created");
    // The stale ones still fan out under their own leases.
    let recs = [record(0, &parents[0].token), record(2, &parents[2].token)];
    let got = q.fan_out_many(&recs).await.unwrap();
    assert_eq!(got, [FannedOut::Applied, FannedOut::Applied]);
    let audit = w.audit_clean().await;
    assert_eq!(audit.count("action:queued"), 6);
}

/// A fan-out leases its call's first action that is due now to the fanning-out worker
/// (its first attempt), which runs it without a fetch. Delayed and further actions are
/// queued as before; a stale parent lease claims and writes nothing; batched fan-outs
/// claim per call.
#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_claims_its_first_due_action_for_the_fanning_out_worker() {
    use aftercall_queue::{FannedOut, Finish, FinishMode, Leased, StateInfo};

    let w = World::new().await;
    let q = &w.queue;
    webhook_actions(q, &["1h", "", ""]).await;
    for c in ["c1", "c2", "c3"] {
        w.push(c, "a1").await;
    }
    let lease = Duration::from_secs(60);
    let parents = q.fetch("w1", 10, lease).await.unwrap().jobs;
    assert_eq!(parents.len(), 3);
    let cfg = q.get_agent("a1").await.unwrap();
    let record = |p: &Leased, token: &str| {
        fan_out_record(p, token, cfg.as_ref(), Some(("w1".into(), lease)))
    };
    // Batched: a stale lease first (nothing written), then two calls.
    let recs = [
        record(&parents[0], "w9:1"),
        record(&parents[0], &parents[0].token),
        record(&parents[1], &parents[1].token),
    ];
    let got = q.fan_out_many(&recs).await.unwrap();
    assert_eq!(got[0], FannedOut::Stale);
    // One record alone takes the script's single-call path.
    let rec3 = record(&parents[2], &parents[2].token);
    let got3 = q.fan_out_many(std::slice::from_ref(&rec3)).await.unwrap();
    let mut claimed = Vec::new();
    for (r, f) in [(&recs[1], &got[1]), (&recs[2], &got[2]), (&rec3, &got3[0])] {
        let FannedOut::Claimed(l) = f else {
            panic!("{}: {f:?}", r.call_id)
        };
        // The first action is delayed: the second is the first due now.
        assert_eq!(l.id, r.jobs[1].0.id, "{}", r.call_id);
        assert_eq!((l.token.as_str(), l.attempt), ("w1:1", 1));
        let rec = q.job(&l.id).await.unwrap().unwrap();
        assert_job(&rec, "running", 1);
        assert_eq!(
            q.job(&r.jobs[0].0.id).await.unwrap().unwrap().state.state,
            "scheduled"
        );
        claimed.push(l.clone());
    }
    // A fetch sees only the third action of each call: not the claimed, not the delayed.
    let mut fetched: Vec<String> = q
        .fetch("w2", 100, lease)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|l| l.id.into())
        .collect();
    fetched.sort();
    let mut third: Vec<String> = [&recs[1], &recs[2], &rec3]
        .iter()
        .map(|r| r.jobs[2].0.id.clone())
        .collect();
    third.sort();
    assert_eq!(fetched, third);
    // A claimed job finishes under its lease like a fetched one.
    let finishes: Vec<Finish> = claimed
        .iter()
        .map(|l| Finish {
            mode: FinishMode::Done,
            id: l.id.clone(),
            token: l.token.clone(),
            run_at_ms: 0,
            state: StateInfo::new(aftercall_core::JobState::Delivered),
            attempt: None,
        })
        .collect();
    assert_eq!(q.finish(&finishes).await.unwrap(), vec![true; 3]);
    let s = q.call_status("c3").await.unwrap().unwrap();
    let states: Vec<&str> = s.actions.iter().map(|a| a.state.state.as_str()).collect();
    assert_eq!(states, ["scheduled", "delivered", "running"]);
}
