//! Compression at rest (issue 18): a call's large event is stored as a zstd frame (and,
//! with keys, sealed around it), reads back byte for byte through every path (delivery,
//! `calls show`, the dead letters, replay), data stored before compression still reads,
//! and a key rotation reseals compressed and older data alike.

use std::time::Duration;

use aftercall_core::CallEvent;
use aftercall_queue::Queue;
use aftercall_tests::{
    K1, K2, Receiver, Reply, World, agent_config, assert_ok, poll, settled, stdout, store_agent,
};
use serde_json::json;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const MARK: &str = "mark-5c1e";

/// A transcript of about 5 KB, no line said twice, with `MARK` at its start and end.
fn transcript(call_id: &str) -> String {
    let who = ["Agent", "User"];
    let what = [
        "the order",
        "the refund",
        "the address",
        "the delivery",
        "the invoice",
        "the warranty",
        "the technician",
        "the card",
    ];
    let how = [
        "was sent on",
        "is due by",
        "moved to",
        "was checked on",
        "changes after",
    ];
    let mut t = format!("Agent: {MARK} hello, this is call {call_id}.");
    for i in 0..70u32 {
        t.push_str(&format!(
            "\n{}: {} {} {} March {}, ref {:06}, \"ok\" at {}:{:02} é",
            who[(i % 2) as usize],
            what[(i * 7 % 8) as usize],
            how[(i * 3 % 5) as usize],
            i,
            1 + i * 13 % 28,
            i.wrapping_mul(2_654_435_761) % 1_000_000,
            8 + i % 10,
            i * 17 % 60
        ));
    }
    t.push_str(&format!("\nUser: bye {MARK}"));
    t
}

fn event(call_id: &str, agent: &str, transcript: &str) -> CallEvent {
    let json = json!({
        "call_id": call_id,
        "agent_id": agent,
        "caller_number": "+14155551234",
        "transcript": transcript,
        "metadata": {"caller_name": "Ann"},
    });
    CallEvent::parse(json.to_string().as_bytes(), 1 << 20).unwrap()
}

/// Two webhook actions, with the transcript: one to `ok`, one to `bad`.
async fn agent(q: &Queue, id: &str, ok: &str, bad: &str) {
    let action = |url: &str| json!({"type": "webhook", "url": url, "include_transcript": true});
    let body = agent_config(None, json!([action(ok), action(bad)]));
    store_agent(q, id, &body).await;
}

/// The raw value of a call's call-ended job data, with that job's id.
async fn stored(w: &World, q: &Queue, call_id: &str) -> (String, Vec<u8>) {
    let s = q.call_status(call_id).await.unwrap().expect("the call");
    let v: Vec<u8> = redis::cmd("HGET")
        .arg(&q.keys().data)
        .arg(&s.call_ended.id)
        .query_async(&mut w.raw().await)
        .await
        .unwrap();
    (s.call_ended.id, v)
}

/// Overwrites a call's stored data with its JSON as an older release stored it: plain.
async fn store_as_before(w: &World, q: &Queue, call_id: &str) -> usize {
    let s = q.call_status(call_id).await.unwrap().unwrap();
    let json = serde_json::to_vec(&s.call_ended.job.unwrap()).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&q.keys().data)
        .arg(&s.call_ended.id)
        .arg(&json)
        .query_async(&mut w.raw().await)
        .await
        .unwrap();
    json.len()
}

fn shown_transcript(s: &aftercall_queue::CallStatus) -> String {
    s.call_ended.job.as_ref().unwrap()["event"]["transcript"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_event_is_compressed_at_rest_and_reads_back_on_every_path() {
    let w = World::new().await;
    let ok = Receiver::answering(Reply::status(200)).await;
    let bad = Receiver::answering(Reply::status(400)).await;
    agent(&w.queue, "agent_z", &ok.url, &bad.url).await;
    let calls = ["z-new", "z-old", "z-small"];
    let text = |c: &str| {
        if c == "z-small" {
            format!("Agent: {MARK} short call {c}.")
        } else {
            transcript(c)
        }
    };
    for c in calls {
        w.queue
            .enqueue(vec![event(c, "agent_z", &text(c))])
            .await
            .unwrap();
    }
    // Stored: the large event as a zstd frame of well under its size, nothing of it
    // readable; the small one as JSON.
    let (_, v) = stored(&w, &w.queue, "z-new").await;
    let json_len = serde_json::to_vec(&event("z-new", "agent_z", &text("z-new")))
        .unwrap()
        .len();
    assert!(json_len > 5_000, "{json_len}");
    assert!(v.starts_with(ZSTD_MAGIC), "{:?}", &v[..8]);
    assert!(v.len() * 2 < json_len, "{} of {json_len}", v.len());
    let (_, small) = stored(&w, &w.queue, "z-small").await;
    assert!(small.starts_with(b"{"), "a small event is stored as JSON");
    // One call as an older release stored it: uncompressed.
    assert!(store_as_before(&w, &w.queue, "z-old").await > 5_000);
    let dump = w.dump().await;
    assert_eq!(
        dump.matches(MARK).count(),
        2 + 1,
        "z-old's two and z-small's one"
    );
    assert!(!dump.contains("call z-new"));

    // Shown as sent, before the worker runs.
    for c in calls {
        let s = w.queue.call_status(c).await.unwrap().unwrap();
        assert_eq!(shown_transcript(&s), text(c), "{c}");
    }

    let _worker = w.worker();
    let mut dead = Vec::new();
    for c in calls {
        let s = w.wait_call(c, Duration::from_secs(20), settled).await;
        assert!(settled(&s), "{s:?}");
        let states: Vec<&str> = s.actions.iter().map(|a| a.state.state.as_str()).collect();
        assert_eq!(states, ["delivered", "dead"], "{c}");
        dead.push(s.actions[1].id.clone());
        // Each action shows the call's event through its reference.
        for a in &s.actions {
            assert_eq!(a.job.as_ref().unwrap()["event"]["transcript"], text(c));
        }
    }
    let by_call = |got: Vec<aftercall_tests::Received>| {
        let mut m: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                let j = r.json();
                (
                    j["call_id"].as_str().unwrap().to_string(),
                    j["transcript"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let want: Vec<(String, String)> = {
        let mut v: Vec<_> = calls.iter().map(|c| (c.to_string(), text(c))).collect();
        v.sort();
        v
    };
    assert_eq!(by_call(ok.received()), want, "delivered byte for byte");

    // `calls show`, `dlq list` and `dlq show` read it back.
    let out = w.cli(&["calls", "show", "z-new", "--json"], "");
    assert_ok(&out, "calls show");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["call_ended"]["job"]["event"]["transcript"],
        text("z-new")
    );
    let out = w.cli(&["dlq", "list", "--json"], "");
    assert_ok(&out, "dlq list");
    for id in &dead {
        assert!(stdout(&out).contains(id.as_str()), "{id} not listed");
        let out = w.cli(&["dlq", "show", id, "--json"], "");
        assert_ok(&out, "dlq show");
        let text_out = stdout(&out);
        assert!(text_out.contains(MARK), "{text_out}");
    }

    // Replayed, the dead letters deliver the same transcripts.
    bad.set_default(Reply::status(200));
    let before = bad.count();
    assert_eq!(w.queue.replay(&dead).await.unwrap(), 3);
    poll(Duration::from_secs(20), || async {
        (bad.count() == before + 3).then_some(())
    })
    .await
    .expect("the replays are delivered");
    assert_eq!(by_call(bad.received()[before..].to_vec()), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_then_sealed_and_a_rotation_reseals_old_data_compressed() {
    let mut w = World::new().await;
    let ok = Receiver::answering(Reply::status(200)).await;
    // Written before compression and encryption: a large event, plain.
    agent(&w.queue, "agent_k", &ok.url, &ok.url).await;
    w.queue
        .enqueue(vec![event("k-old", "agent_k", &transcript("k-old"))])
        .await
        .unwrap();
    let old_len = store_as_before(&w, &w.queue, "k-old").await;

    w.set("AFTERCALL_ENCRYPTION_KEYS", K1);
    let q1 = w.keyed(K1).await;
    q1.enqueue(vec![event("k-new", "agent_k", &transcript("k-new"))])
        .await
        .unwrap();
    let (_, v) = stored(&w, &q1, "k-new").await;
    assert!(v.starts_with(b"\x01\x02v1"), "sealed with v1");
    assert!(
        v.len() * 2 < old_len,
        "compressed inside: {} of ~{old_len}",
        v.len()
    );
    assert!(!w.dump().await.contains("call k-new"), "no plaintext");

    // Rotation to v2: the old plain value is sealed, and compressed on the way.
    let both = format!("{K2},{K1}");
    w.set("AFTERCALL_ENCRYPTION_KEYS", &both);
    let out = w.cli(&["keys", "rotate"], "");
    assert_ok(&out, "aftercall keys rotate");
    for c in ["k-old", "k-new"] {
        let (_, v) = stored(&w, &q1, c).await;
        assert!(v.starts_with(b"\x01\x02v2"), "{c}: not sealed with v2");
        assert!(v.len() * 2 < old_len, "{c}: {} of ~{old_len}", v.len());
    }
    assert_eq!(w.dump().await.matches(MARK).count(), 0);

    // v2 alone reads both, shows them and delivers them as sent.
    w.set("AFTERCALL_ENCRYPTION_KEYS", K2);
    let q2 = w.keyed(K2).await;
    for c in ["k-old", "k-new"] {
        let s = q2.call_status(c).await.unwrap().unwrap();
        assert_eq!(shown_transcript(&s), transcript(c));
    }
    let _worker = w.worker();
    for c in ["k-old", "k-new"] {
        let s = w.wait_call(c, Duration::from_secs(20), settled).await;
        assert!(
            s.actions
                .iter()
                .all(|a| a.state.state.as_str() == "delivered"),
            "{s:?}"
        );
    }
    let got = ok.received();
    assert_eq!(got.len(), 4);
    for r in got {
        let j = r.json();
        let c = j["call_id"].as_str().unwrap();
        assert_eq!(j["transcript"], transcript(c), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_enqueue_of_large_events_is_sealed_apart_and_reads_back_in_order() {
    let w = World::new().await;
    // 1,200 events of ~6 KB: chunks of 500 (3 MB each) are sealed on blocking threads.
    let events: Vec<CallEvent> = (0..1200)
        .map(|i| {
            let c = format!("bulk-{i}");
            event(&c, "agent_b", &transcript(&c))
        })
        .collect();
    let answers = w.queue.enqueue(events).await.unwrap();
    assert_eq!(answers.len(), 1200);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            a.call_id,
            format!("bulk-{i}"),
            "answers keep the batch's order"
        );
        assert!(!a.duplicate);
    }
    for i in [0, 499, 500, 777, 1199] {
        let c = format!("bulk-{i}");
        let (_, v) = stored(&w, &w.queue, &c).await;
        assert!(v.starts_with(ZSTD_MAGIC), "{c}");
        let s = w.queue.call_status(&c).await.unwrap().expect("known call");
        let job = s.call_ended.job.expect("stored job");
        assert_eq!(job["event"]["transcript"], transcript(&c), "{c}");
    }
}
