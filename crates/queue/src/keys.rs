//! Redis key names. The only place that knows them. Every key of a queue shares one
//! hash tag, `{prefix}`, so a queue lives in one Redis Cluster slot and every script's
//! keys are declared and co-located.

#[derive(Debug, Clone)]
pub struct Keys {
    pub ready: String,
    pub running: String,
    pub scheduled: String,
    pub dead: String,
    pub done: String,
    pub data: String,
    pub state: String,
    pub attempts: String,
    pub max: String,
    pub log: String,
    pub lease: String,
    pub calls: String,
    /// When call ids were first enqueued, for retention: a stream, one entry per enqueue
    /// (its id the time, its fields the call ids).
    pub calls_log: String,
    pub fanout: String,
    /// A call-ended job's action jobs not yet forgotten (parent id -> count): its data,
    /// the call's one copy of the event, stays while any of them may still read it.
    pub refs: String,
    /// A call's completion callback (parent id -> the callback job's id), for calls whose
    /// agent has `on_complete`.
    pub completion: String,
    /// Of such calls, the action jobs not yet settled (parent id -> count); `<parent>!`
    /// marks a call that settled again while its callback was being sent.
    pub pending: String,
    /// Operational alerts raised and not yet lowered (name -> when), so that one
    /// replica, once, announces a threshold crossed.
    pub alerted: String,
    /// A call's analysis from its platform (call id -> record), kept as long as the call.
    pub analysis: String,
    /// Erasures (who, when, how many jobs): a stream, no content.
    pub audit: String,
    /// How far payload retention got through `done` (a score).
    pub payload_cursor: String,
    /// One sealed canary per encryption key version (crypt.rs).
    pub keycheck: String,
    pub notify: String,
    /// How many partitions the queue's jobs are spread over (partition.rs), so that a
    /// process started with another number does not lose sight of them.
    pub partitions: String,
    pub agents: String,
    pub workers: String,
    /// Opted-out contacts (`channel:address` -> when and how), across agents.
    pub optouts: String,
}

impl Keys {
    /// The semaphore of one destination (host, SMS sender, task provider account).
    pub fn limit(&self, destination: &str) -> String {
        format!("{}:limit:{destination}", self.tag())
    }

    /// The start counter of one destination for one second.
    pub fn rate(&self, destination: &str, second: i64) -> String {
        format!("{}:rate:{destination}:{second}", self.tag())
    }

    /// The recent sends to one contact (channel and address), for its frequency cap.
    pub fn sent(&self, channel: &str, address: &str) -> String {
        format!("{}:sent:{channel}:{address}", self.tag())
    }

    /// One destination's health: its circuit breaker and its pause after a 429.
    pub fn health(&self, destination: &str) -> String {
        format!("{}:health:{destination}", self.tag())
    }

    /// The jobs one destination holds (job id -> when its hold ends).
    pub fn held(&self, destination: &str) -> String {
        format!("{}:held:{destination}", self.tag())
    }

    /// The operators' pauses: `destination:<d>`, `agent:<id>` or `action:<type>` -> JSON.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.tag())
    }

    /// Every destination seen (destination -> last seen, ms).
    pub fn destinations(&self) -> String {
        format!("{}:destinations", self.tag())
    }

    /// One dashboard session, named by a digest of its id: whoever can list the keys
    /// learns no usable session id.
    pub fn session(&self, session_id: &str) -> String {
        self.digested("session", session_id)
    }

    /// One one-time login code, named by a digest of the code, as sessions are.
    pub fn login_code(&self, code: &str) -> String {
        self.digested("login_code", code)
    }

    /// `{tag}:<kind>:<hex SHA-256 of a kind-specific prefix and the secret>`.
    fn digested(&self, kind: &str, secret: &str) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::new()
            .chain_update(format!("aftercall-{}\0", kind.replace('_', "-")).as_bytes())
            .chain_update(secret.as_bytes())
            .finalize();
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{kind}:{hex}", self.tag())
    }

    /// The key a script's key list calls `name` (scripts.rs).
    pub fn named(&self, name: &str) -> Option<&str> {
        Some(match name {
            "ready" => &self.ready,
            "running" => &self.running,
            "scheduled" => &self.scheduled,
            "dead" => &self.dead,
            "done" => &self.done,
            "data" => &self.data,
            "state" => &self.state,
            "attempts" => &self.attempts,
            "max" => &self.max,
            "log" => &self.log,
            "lease" => &self.lease,
            "calls" => &self.calls,
            "calls_log" => &self.calls_log,
            "fanout" => &self.fanout,
            "refs" => &self.refs,
            "completion" => &self.completion,
            "pending" => &self.pending,
            "alerted" => &self.alerted,
            "analysis" => &self.analysis,
            "audit" => &self.audit,
            "payload_cursor" => &self.payload_cursor,
            "keycheck" => &self.keycheck,
            "notify" => &self.notify,
            "partitions" => &self.partitions,
            "agents" => &self.agents,
            "workers" => &self.workers,
            "optouts" => &self.optouts,
            _ => return None,
        })
    }

    /// The hash tag's text (what the braces hold).
    pub fn hash_tag(&self) -> &str {
        let t = self.tag();
        &t[1..t.len() - 1]
    }

    fn tag(&self) -> &str {
        self.ready
            .strip_suffix(":ready")
            .expect("ready key ends in :ready")
    }

    pub fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            ready: k("ready"),
            running: k("running"),
            scheduled: k("scheduled"),
            dead: k("dead"),
            done: k("done"),
            data: k("data"),
            state: k("state"),
            attempts: k("attempts"),
            max: k("max"),
            log: k("log"),
            lease: k("lease"),
            calls: k("calls"),
            calls_log: k("calls_log"),
            fanout: k("fanout"),
            refs: k("refs"),
            completion: k("completion"),
            pending: k("pending"),
            alerted: k("alerted"),
            analysis: k("analysis"),
            audit: k("audit"),
            payload_cursor: k("payload_cursor"),
            keycheck: k("keycheck"),
            notify: k("notify"),
            partitions: k("partitions"),
            agents: k("agents"),
            workers: k("workers"),
            optouts: k("optouts"),
        }
    }
}
