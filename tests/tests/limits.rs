//! Per-destination limits hold across worker replicas, and work held back by a limit is
//! not counted as an attempt.

use std::time::Duration;

use aftercall_tests::{Reply, World, assert_job};

#[tokio::test(flavor = "multi_thread")]
async fn a_host_limit_holds_across_replicas_and_costs_no_attempts() {
    let w = World::with_env(&[
        ("AFTERCALL_LIMITS", "127.0.0.1=2"),
        ("AFTERCALL_CONCURRENCY", "8"),
    ])
    .await;
    let hold = Duration::from_millis(300);
    let (rx, _w1) = w.serving("a1", Reply::status(200).delay(hold)).await;
    let _w2 = w.worker();
    let n = 12;
    w.enqueue_range("l", "a1", 0..n).await;
    for s in w.settled_range("l", 0..n, Duration::from_secs(30)).await {
        // Held back is not an attempt.
        assert_job(&s.actions[0], "delivered", 1);
    }
    // Each request is held 300 ms, so with at most 2 at once no 3 can start within a
    // window shorter than that.
    let mut at: Vec<_> = rx.received().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), n);
    for win in at.windows(3) {
        let spread = win[2] - win[0];
        assert!(
            spread >= hold - Duration::from_millis(40),
            "3 requests started within {spread:?}: limit of 2 exceeded"
        );
    }
}
