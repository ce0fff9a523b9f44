//! Human-readable output for calls, jobs and dead letters. Secrets in stored action
//! configs are redacted before anything is printed.

use aftercall_queue::{CallStatus, JobRecord};
use chrono::{TimeZone, Utc};

fn time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn state_line(r: &JobRecord) -> String {
    let s = &r.state;
    let mut line = s.state.to_string();
    // A reason says itself when the job runs ("waiting for analysis until T").
    if let Some(run_at) = s
        .run_at
        .filter(|_| s.state == "scheduled" && s.reason.is_none())
    {
        line.push_str(&format!(" (retry at {})", time(run_at)));
    }
    if let Some(reason) = &s.reason {
        line.push_str(&format!(": {reason}"));
    } else if let Some(e) = &s.error {
        line.push_str(&format!(": {e}"));
    }
    line
}

pub fn print_call(s: &CallStatus) {
    let event = s.call_ended.job.as_ref().map(|j| &j["event"]);
    let field = |name: &str| event.and_then(|e| e[name].as_str());
    let mut facts: Vec<String> = Vec::new();
    if let Some(p) = field("platform") {
        facts.push(format!("from {p}"));
    }
    for name in ["direction", "ended_reason"] {
        if let Some(v) = field(name) {
            facts.push(v.to_string());
        }
    }
    if facts.is_empty() {
        println!("call {}", s.call_id);
    } else {
        println!("call {} ({})", s.call_id, facts.join(", "));
    }
    if let Some(why) = event.and_then(|e| e["metadata"]["payload"].as_str()) {
        println!("  payload {why}: the call's content is gone; ids, states and outcomes stay");
    }
    if let Some(a) = &s.analysis {
        let mut line = format!("  analysis arrived {}", time(a.at));
        if let Some(an) = &a.analysis {
            if let Some(ok) = an.successful {
                line.push_str(if ok {
                    ", successful"
                } else {
                    ", not successful"
                });
            }
            if let Some(sent) = &an.sentiment {
                line.push_str(&format!(", sentiment {sent}"));
            }
        }
        println!("{line}");
    }
    println!(
        "  call_ended {}  {}",
        s.call_ended.id,
        state_line(&s.call_ended)
    );
    for a in &s.actions {
        println!(
            "  [{}] {:<8} {}  {}  attempts {}/{}",
            a.action_index.unwrap_or(0),
            a.kind,
            a.id,
            state_line(a),
            a.attempts,
            a.max_attempts
        );
        print_history(a, "      ");
    }
}

fn print_history(r: &JobRecord, indent: &str) {
    for h in &r.history {
        let mut line = format!(
            "{indent}#{} {} {:?}",
            h.attempt,
            time(h.at.timestamp_millis()),
            h.outcome
        );
        if let Some(st) = h.status {
            line.push_str(&format!(" HTTP {st}"));
        }
        if let Some(e) = &h.error {
            line.push_str(&format!(" {e}"));
        }
        if let Some(n) = h.next_run_at {
            line.push_str(&format!(" (next at {})", time(n.timestamp_millis())));
        }
        println!("{line}");
        if let Some(resp) = &h.response {
            println!("{indent}   response: {}", resp.replace('\n', " "));
        }
    }
}

pub fn print_job(r: &JobRecord) {
    println!("job {} ({})", r.id, r.kind);
    if let Some(c) = &r.call_id {
        println!("  call {c}  agent {}", r.agent_id.as_deref().unwrap_or("-"));
    }
    println!("  state {}  at {}", state_line(r), time(r.state.at));
    println!("  attempts {}/{}", r.attempts, r.max_attempts);
    print_history(r, "    ");
}

pub fn print_dlq(items: &[JobRecord]) {
    if items.is_empty() {
        println!("no dead letters");
        return;
    }
    for r in items {
        println!(
            "{}  {:<8} agent {:<16} call {:<20} dead {}  {} attempt(s)  {}",
            r.id,
            r.kind,
            r.agent_id.as_deref().unwrap_or("-"),
            r.call_id.as_deref().unwrap_or("-"),
            time(r.state.at),
            r.attempts,
            r.last_error().unwrap_or("")
        );
    }
}

/// Destinations, one a line, then the pauses in force.
pub fn print_destinations(
    list: &[aftercall_queue::DestinationHealth],
    pauses: &[aftercall_queue::Pause],
) {
    if list.is_empty() {
        println!("no destination seen yet");
    }
    for d in list {
        let mut line = format!(
            "{:<32} {:<9} streak {:<3} held {:<5}",
            d.destination, d.state, d.failure_streak, d.held
        );
        if let Some(since) = d.open_since {
            line.push_str(&format!(" open since {}", time(since)));
        }
        if let Some(until) = d.throttled_until {
            line.push_str(&format!(" throttled until {}", time(until)));
        }
        if let Some(e) = &d.last_error {
            let at = d.last_error_at.map(time).unwrap_or_default();
            line.push_str(&format!(" last error {at}: {e}"));
        }
        println!("{}", line.trim_end());
    }
    for p in pauses {
        println!("paused {} since {}", p.scope, time(p.at));
    }
}
