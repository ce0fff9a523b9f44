//! Destination health against real receivers: the circuit breaker holds a failing
//! destination's work (bounded requests, no attempts spent, nothing dead within the
//! horizon), a 429 pauses the destination for every replica, a receiver can stop a
//! message's retries, and operators pause and resume work.

use std::time::{Duration, Instant};

use aftercall_tests::{
    Reply, World, action_states, assert_job, assert_prints, poll, stderr, stdout,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_destination_is_held_then_probed_then_closed() {
    flapping(1).await;
}

/// With partitions the held jobs are in several partitions' schedules, and the breaker
/// (under the queue's shared tag) lets each partition's go when it closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_queue_s_held_work_goes_when_the_circuit_closes() {
    flapping(3).await;
}

async fn flapping(partitions: usize) {
    let w = World::partitioned(
        partitions,
        &[
            ("AFTERCALL_BREAKERS", "127.0.0.1=3/1s"),
            ("AFTERCALL_CONCURRENCY", "4"),
        ],
    )
    .await;
    let (rx, _w1) = w.serving("a1", Reply::status(503)).await;
    let n = 40;
    w.enqueue_range("f", "a1", 0..n).await;
    let outage = Duration::from_secs(5);
    let began = Instant::now();
    // While it is down: the circuit opens and holds the calls' work.
    let open = poll(Duration::from_secs(10), || async {
        let list = w.queue.destinations().await.expect("destinations");
        list.into_iter()
            .find(|d| d.destination == "127.0.0.1" && d.state != "closed" && d.held > 0)
    })
    .await
    .expect("the circuit opens and holds jobs");
    assert!(open.failure_streak >= 3, "{open:?}");
    assert!(open.open_since.is_some(), "{open:?}");
    assert!(
        open.last_error.as_deref().unwrap_or("").contains("503"),
        "{open:?}"
    );
    tokio::time::sleep(outage.saturating_sub(began.elapsed())).await;
    let during = rx.count();
    rx.set_default(Reply::ok());
    // Without the breaker, 40 calls with 4 attempts each are 160 requests, all of them
    // dead at the end. With it: the failures before it opened (at most the 3 of its
    // threshold and the 4 then in flight) and about one probe per cool-down.
    let bound = 3 + 4 + outage.as_secs() as usize + 2;
    assert!(
        during <= bound,
        "{during} requests during a {outage:?} outage (bound {bound})"
    );
    for s in w.settled_range("f", 0..n, Duration::from_secs(20)).await {
        let id = &s.call_id;
        let a = &s.actions[0];
        assert_eq!(a.state.state.as_str(), "delivered", "{id}: {:?}", a.state);
        assert!(
            a.attempts <= 2,
            "{id}: held work spent {} attempts",
            a.attempts
        );
    }
    let closed = w.queue.destinations().await.expect("destinations");
    let d = closed
        .iter()
        .find(|d| d.destination == "127.0.0.1")
        .unwrap();
    assert_eq!((d.state.as_str(), d.failure_streak), ("closed", 0), "{d:?}");
    // Each call delivered once after the outage: no duplicate from a probe.
    assert_eq!(rx.count() - during, n, "deliveries after the outage");
}

#[tokio::test(flavor = "multi_thread")]
async fn work_held_past_its_horizon_is_dead_lettered_with_the_reason() {
    let w = World::with_env(&[
        ("AFTERCALL_BREAKERS", "*=2/500ms"),
        ("AFTERCALL_MAX_HOLD", "3s"),
        ("AFTERCALL_MAX_ATTEMPTS", "100"),
    ])
    .await;
    let (_rx, _w1) = w.serving("a1", Reply::status(503)).await;
    w.enqueue_range("h", "a1", 0..5).await;
    for s in w.settled_range("h", 0..5, Duration::from_secs(15)).await {
        let id = &s.call_id;
        let a = &s.actions[0];
        assert_eq!(a.state.state.as_str(), "dead", "{id}");
        let err = a.state.error.as_deref().unwrap_or_default();
        assert!(
            err.starts_with("destination unavailable since 20"),
            "{id}: {err}"
        );
        assert!(a.attempts < 10, "{id}: {} attempts while held", a.attempts);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_pauses_the_destination_for_every_replica() {
    let w = World::new().await;
    let rx = w
        .receiver_for("a1", Reply::status(429).header("retry-after", "3"))
        .await;
    let _w1 = w.worker();
    let _w2 = w.worker();
    w.push("first", "a1").await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let asked = got[0].at;
    rx.set_default(Reply::ok());
    // Past the moment a replica trusts its own view of the destination.
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.enqueue_range("p", "a1", 0..10).await;
    for s in w.settled_range("p", 0..10, Duration::from_secs(15)).await {
        let id = &s.call_id;
        assert_eq!(action_states(&s), vec![("webhook", "delivered")], "{id}");
        assert_eq!(
            s.actions[0].attempts, 1,
            "{id}: the pause is not an attempt"
        );
    }
    let next = rx.received()[1..].iter().map(|r| r.at).min().unwrap();
    assert!(
        next - asked >= Duration::from_millis(2_900),
        "a request {:?} after the 429 that asked for 3 s",
        next - asked
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_stops_retries_with_a_header() {
    let w = World::new().await;
    let rx = w
        .receiver_for(
            "a1",
            Reply::status(503).header("Aftercall-No-Retry", "true"),
        )
        .await;
    let _w1 = w.worker();
    let s = w.push_settled("stop", "a1", Duration::from_secs(10)).await;
    let a = &s.actions[0];
    assert_job(a, "dead", 1);
    let err = a.state.error.as_deref().unwrap_or_default();
    assert!(err.contains("asked not to retry"), "{err}");
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_work_waits_and_goes_when_resumed() {
    let w = World::new().await;
    let rx = w.receiver_for("a1", Reply::ok()).await;
    let out = w.cli(&["destinations", "pause", "--agent", "a1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_prints(&out, "paused agent:a1");
    let _w1 = w.worker();
    w.enqueue_range("z", "a1", 0..5).await;
    // Held: nothing sent, no attempt spent, nothing failed.
    let held = poll(Duration::from_secs(10), || async {
        let list = w.queue.destinations().await.expect("destinations");
        list.into_iter()
            .find(|d| d.destination == "127.0.0.1" && d.held == 5)
    })
    .await;
    assert!(held.is_some(), "the five jobs are held");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.count(), 0);
    for i in 0..5 {
        let s = w.status(&format!("z{i}")).await;
        let a = &s.actions[0];
        assert_job(a, "scheduled", 0);
        assert!(
            a.state
                .reason
                .as_deref()
                .unwrap_or("")
                .starts_with("held: paused"),
            "{:?}",
            a.state
        );
    }
    let list = w.cli(&["destinations", "list"], "");
    let text = stdout(&list);
    assert!(
        text.contains("127.0.0.1") && text.contains("held 5"),
        "{text}"
    );
    assert!(text.contains("paused agent:a1 since"), "{text}");
    let json = w.cli(&["destinations", "list", "--json"], "");
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["pauses"][0]["scope"], "agent:a1");

    let out = w.cli(&["destinations", "resume", "--agent", "a1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    for s in w.settled_range("z", 0..5, Duration::from_secs(10)).await {
        let id = &s.call_id;
        assert_eq!(action_states(&s), vec![("webhook", "delivered")], "{id}");
        assert_eq!(s.actions[0].attempts, 1, "{id}");
    }
    let again = w.cli(&["destinations", "resume", "--agent", "a1"], "");
    assert!(!again.status.success(), "resuming what is not paused fails");
}
