//! Partitions (issue 18): one queue spread over several hash tags
//! (`AFTERCALL_PARTITIONS`). Calls and their jobs stay in their call's partition, workers
//! take from every partition, and every ops view sees the whole queue. (On a real Redis
//! Cluster: tests/tests/cluster.rs.)

use std::time::Duration;

use aftercall_core::CallEvent;
use aftercall_queue::{DlqFilter, Queue};
use aftercall_tests::{
    Receiver, Reply, World, agent_config, assert_all, assert_ok, call_event, settled, stdout,
    store_agent,
};
use serde_json::json;

/// How long a call may take to settle here.
const T: Duration = Duration::from_secs(60);

async fn partitioned(w: &World, n: usize) -> Result<Queue, aftercall_queue::QueueError> {
    w.connect_with(|c| c.partitions = n).await
}

fn events(prefix: &str, agent: &str, n: usize) -> Vec<CallEvent> {
    (0..n)
        .map(|i| {
            CallEvent::parse(
                call_event(&format!("{prefix}{i}"), agent).as_bytes(),
                1 << 20,
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_queue_delivers_and_ops_see_all_of_it() {
    let mut w = World::partitioned(3, &[]).await;
    let q = w.queue.clone();
    assert_eq!(q.partitions(), 3);
    let http = w.with_api("read:r-token-0123456789abcdef");
    let ok = Receiver::answering(Reply::status(200)).await;
    let bad = Receiver::answering(Reply::status(500)).await;
    let body = agent_config(
        None,
        json!([{"type": "webhook", "url": ok.url}, {"type": "webhook", "url": bad.url}]),
    );
    store_agent(&q, "a1", &body).await;
    let w1 = w.worker();
    let _w2 = w.worker();
    w1.wait_status(&http, "/readyz", 200).await;

    // A batch (split by partition, answered in order) and single events (coalesced).
    let batch = q.enqueue(events("b", "a1", 60)).await.unwrap();
    assert_eq!(batch.len(), 60);
    for (i, e) in batch.iter().enumerate() {
        assert_eq!(e.call_id, format!("b{i}"), "answers keep the batch's order");
        assert!(!e.duplicate);
    }
    let mut ids: Vec<String> = batch.iter().map(|e| e.call_id.clone()).collect();
    for e in events("s", "a1", 15) {
        let r = q.enqueue(vec![e]).await.unwrap();
        ids.push(r[0].call_id.clone());
    }
    // Enqueueing again is a duplicate, whichever partition the call is in.
    let again = q.enqueue(events("b", "a1", 60)).await.unwrap();
    assert!(
        again
            .iter()
            .zip(&batch)
            .all(|(a, b)| a.duplicate && a.job_id == b.job_id)
    );

    // Every call settles: its first action delivered, its second dead after its retries.
    for id in &ids {
        w.wait_call(id, T, settled).await;
    }
    let mut per_partition = [0usize; 3];
    for id in &ids {
        let s = q.call_status(id).await.unwrap().unwrap();
        let p: usize = s.call_ended.id[3..4].parse().unwrap();
        per_partition[p] += 1;
        assert!(
            s.call_ended.id.starts_with(&format!("job{p}_")),
            "{}",
            s.call_ended.id
        );
        let states: Vec<&str> = s.actions.iter().map(|a| a.state.state.as_str()).collect();
        assert_eq!(states, ["delivered", "dead"], "{id}");
        for a in &s.actions {
            assert!(
                a.id.starts_with(&s.call_ended.id),
                "an action stays with its call"
            );
        }
    }
    // The calls spread over the partitions, each in its own hash tag.
    assert!(per_partition.iter().all(|n| *n >= 10), "{per_partition:?}");
    let mut raw = w.raw().await;
    for (p, want) in per_partition.iter().enumerate() {
        let n: usize = redis::cmd("HLEN")
            .arg(&q.partition(p).keys().calls)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(n, *want);
    }
    let home_calls: usize = redis::cmd("HLEN")
        .arg(&q.home().calls)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(home_calls, 0, "no job lives under the home tag");

    // Stats and the dead-letter list see all partitions; pages follow one another, oldest
    // first, each dead letter once.
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.calls, stats.dead), (75, 75));
    assert_eq!(q.dead_count().await.unwrap(), 75);
    let mut seen: Vec<(f64, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q
            .dlq_list(&DlqFilter::default(), cursor.as_deref(), 7)
            .await
            .unwrap();
        for r in page.items {
            let score: f64 = redis::cmd("ZSCORE")
                .arg(&q.for_job(&r.id).keys().dead)
                .arg(&r.id)
                .query_async(&mut raw)
                .await
                .unwrap();
            seen.push((score, r.id));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 75);
    assert!(seen.windows(2).all(|p| p[0].0 <= p[1].0), "oldest first");
    let mut unique: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 75);
    // The API pages through them too, its cursors being the merged list's.
    let mut api_seen = Vec::new();
    let mut path = "/dead-letters?limit=20".to_string();
    loop {
        let page = http.get_json(&path, "r-token-0123456789abcdef").await;
        for item in page["items"].as_array().unwrap() {
            api_seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/dead-letters?limit=20&cursor={c}"),
            None => break,
        }
    }
    let listed: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(api_seen, listed);
    // Its document describes those cursors: a position per partition.
    let doc = http
        .get_json("/openapi.json", "r-token-0123456789abcdef")
        .await
        .to_string();
    assert!(
        doc.contains(r#"{1,18}){2}$"#),
        "the cursor pattern for 3 partitions"
    );

    // The CLI, run with the same setting, sees a call of every partition and the dead
    // letters of all of them.
    for id in ["b0", "b1", "b2", "s3"] {
        let out = w.cli(&["calls", "show", id], "");
        assert_ok(&out, "calls show");
        assert!(stdout(&out).contains(id), "{}", stdout(&out));
    }
    let out = w.cli(&["stats"], "");
    assert_ok(&out, "stats");

    // A bulk replay reaches every partition; the destination recovered, all deliver.
    bad.set_default(Reply::status(200));
    let replayed = q
        .replay_matching(&DlqFilter::default().bulk(true).unwrap())
        .await
        .unwrap();
    assert_eq!(replayed, 75);
    for id in &ids {
        let s = w
            .wait_call(id, T, |s| {
                s.actions.iter().all(|a| a.state.state == "delivered")
            })
            .await;
        assert_all(&s, "delivered");
    }
    assert_eq!(q.stats().await.unwrap().dead, 0);

    // Erasing a call finds it in its partition.
    let erased = q
        .erase_call("b5", "test")
        .await
        .unwrap()
        .expect("known call");
    assert_eq!(erased.ids.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_partition_count_changes_only_once_the_old_layout_is_drained() {
    let w = World::new().await;
    let rx = w.receiver_for("a1", Reply::status(200)).await;
    // A call queued under one partition, no worker yet.
    w.push("c1", "a1").await;

    // Another count would lose sight of it: refused, saying what to do.
    let err = partitioned(&w, 3).await.err().expect("refused").to_string();
    assert!(
        err.contains("AFTERCALL_PARTITIONS=3") && err.contains("AFTERCALL_PARTITIONS=1"),
        "{err}"
    );
    let mut worker = w.worker_with(&[("AFTERCALL_PARTITIONS", "3")]);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("worker stops");
    assert!(!status.success());
    assert!(
        worker.log_text().contains("AFTERCALL_PARTITIONS=1"),
        "{}",
        worker.log_text()
    );
    // Reading (the CLI's status and lists) only warns.
    let out = w.cli_with(&["stats"], "", &[("AFTERCALL_PARTITIONS", "3")]);
    assert_ok(&out, "stats with another count");

    // Drained by a worker with the old count, the queue takes the new one.
    let _old = w.worker();
    w.wait_call("c1", Duration::from_secs(20), settled).await;
    assert_eq!(rx.count(), 1);
    drop(_old);
    let q3 = partitioned(&w, 3)
        .await
        .expect("drained: the new count is taken");
    let mut raw = w.raw().await;
    let recorded: String = redis::cmd("GET")
        .arg(&q3.home().partitions)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(recorded, "3");

    // Work under the new count now holds the old one off in turn.
    q3.enqueue(events("n", "a1", 5)).await.unwrap();
    let err = partitioned(&w, 1).await.err().expect("refused").to_string();
    assert!(err.contains("AFTERCALL_PARTITIONS=3"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closing_circuit_lets_every_partition_s_held_work_go_at_once() {
    // A long cool-down: only the release on closing can send the held work in time.
    let w = World::partitioned(
        3,
        &[
            ("AFTERCALL_BREAKERS", "127.0.0.1=3/60s"),
            ("AFTERCALL_CONCURRENCY", "4"),
        ],
    )
    .await;
    let (rx, _worker) = w.serving("a1", Reply::status(503)).await;
    w.enqueue_range("h", "a1", 0..30).await;
    let held = aftercall_tests::poll(Duration::from_secs(15), || async {
        let list = w.queue.destinations().await.unwrap();
        list.into_iter()
            .find(|d| d.destination == "127.0.0.1" && d.state == "open" && d.held >= 20)
    })
    .await
    .expect("the circuit opens and holds the calls' work");
    assert!(held.held >= 20, "{held:?}");
    // The destination recovers and a probe (here: a report) says so.
    rx.set_default(Reply::ok());
    let r = w
        .queue
        .report(
            "127.0.0.1",
            aftercall_queue::Health::Ok,
            "",
            3,
            Duration::from_secs(60),
            0,
        )
        .await
        .unwrap();
    assert_eq!(r.event, Some(aftercall_queue::BreakerEvent::Closed));
    for s in w.settled_range("h", 0..30, Duration::from_secs(15)).await {
        assert_all(&s, "delivered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_in_one_partition_does_not_starve_another() {
    let w = World::partitioned(3, &[("AFTERCALL_CONCURRENCY", "4")]).await;
    let q = &w.queue;
    let _rx = w
        .receiver_for("a1", Reply::status(200).delay(Duration::from_millis(50)))
        .await;
    // Call ids by partition: a backlog of 300 in partition 0, then 5 in partition 2.
    let in_part = |p: usize| {
        let ready = q.partition(p).keys().ready.clone();
        (0..)
            .map(|i| format!("f{i}"))
            .filter(move |id| q.for_call(id).keys().ready == ready)
    };
    let backlog: Vec<String> = in_part(0).take(300).collect();
    let late: Vec<String> = in_part(2).take(5).collect();
    let ev = |ids: &[String]| -> Vec<CallEvent> {
        ids.iter()
            .map(|id| CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap())
            .collect()
    };
    q.enqueue(ev(&backlog)).await.unwrap();
    let _worker = w.worker();
    // The backlog is being worked through (4 at a time, 50 ms each: 3.75 s at least)...
    w.wait_call(&backlog[0], Duration::from_secs(20), settled)
        .await;
    q.enqueue(ev(&late)).await.unwrap();
    // ...and the late partition's calls are served in turn, not after it.
    for id in &late {
        let s = w.wait_call(id, Duration::from_secs(20), settled).await;
        assert_all(&s, "delivered");
    }
    let st = q.stats().await.unwrap();
    let left = st.queued + st.running + st.scheduled;
    assert!(
        left >= 100,
        "the late calls waited for the backlog: {left} of 300 left"
    );
}
