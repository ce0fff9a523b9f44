//! What the queue needs of the Redis it runs on. A Redis that evicts keys under memory
//! pressure loses jobs silently (their data, the agents' configs, the indexes), so the
//! queue refuses any `maxmemory-policy` but `noeviction`, as Sidekiq and BullMQ do,
//! unless told otherwise. A Redis that persists nothing loses every queued job when it
//! restarts: that is only warned about (a cache-like Redis may be a deliberate choice).

use redis::Value;

use crate::conn::{self, Conn};

/// The one policy that never drops a key to make room.
pub const NO_EVICTION: &str = "noeviction";

/// The override's setting: run on an evicting Redis anyway.
pub const ALLOW_EVICTION: &str = "AFTERCALL_ALLOW_EVICTION";

/// What Redis said about itself. `None` where it would not say (`CONFIG` disabled, as on
/// many managed Redis services, or a field missing from `INFO`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedisFacts {
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Keys evicted since Redis started (`INFO stats`' `evicted_keys`).
    pub evicted_keys: Option<u64>,
    /// The append-only file is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aof: Option<bool>,
    /// RDB snapshots are configured (`CONFIG GET save` is not empty); read at connect only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdb_saves: Option<bool>,
    /// Why nothing could be read: Redis refused `INFO` to this user (ACL).
    #[serde(skip)]
    pub refused: Option<String>,
}

impl RedisFacts {
    /// Reads the policy and the eviction count from `INFO` (which managed Redis keeps),
    /// asking `CONFIG GET` (often disabled there) for the policy only where `INFO` lacks
    /// it (Redis before 4). One round trip as a rule: this runs at every scrape and
    /// stats call. On a cluster, the queue's primary is asked: every key of the queue
    /// lives there.
    pub async fn read(conn: &mut Conn, slot: Option<u16>) -> redis::RedisResult<RedisFacts> {
        let info = match conn::on_slot_primary(conn, slot, redis::cmd("INFO")).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                return Ok(RedisFacts {
                    refused: Some(e.to_string()),
                    ..RedisFacts::default()
                });
            }
            r => r?,
        };
        let info: String = redis::from_redis_value(info)?;
        let mut facts = RedisFacts::from_info(&info);
        if facts.maxmemory_policy.is_none() {
            facts.maxmemory_policy = config_get(conn, slot, "maxmemory-policy").await;
        }
        Ok(facts)
    }

    /// [`RedisFacts::read`], and whether RDB snapshots are configured (`CONFIG GET
    /// save`), for the warnings at connect.
    pub async fn read_at_connect(
        conn: &mut Conn,
        slot: Option<u16>,
    ) -> redis::RedisResult<RedisFacts> {
        let mut facts = RedisFacts::read(conn, slot).await?;
        if facts.refused.is_none() {
            facts.rdb_saves = config_get(conn, slot, "save")
                .await
                .map(|v| !v.trim().is_empty());
        }
        Ok(facts)
    }

    /// The fields of an `INFO` answer that matter here.
    pub fn from_info(info: &str) -> RedisFacts {
        let mut facts = RedisFacts::default();
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            match name {
                "maxmemory_policy" => facts.maxmemory_policy = Some(value.to_string()),
                "evicted_keys" => facts.evicted_keys = value.parse().ok(),
                "aof_enabled" => facts.aof = Some(value == "1"),
                _ => {}
            }
        }
        facts
    }

    /// True when Redis may drop keys to make room (or would not say: a policy we
    /// cannot read is not taken as safe).
    pub fn evicts(&self) -> bool {
        self.maxmemory_policy.as_deref() != Some(NO_EVICTION)
    }

    /// True only when Redis is known to persist nothing (no AOF and no RDB saves).
    pub fn persists_nothing(&self) -> bool {
        self.aof == Some(false) && self.rdb_saves == Some(false)
    }

    /// The one line that says what is wrong with an evicting Redis and how to fix it.
    pub fn eviction_problem(&self) -> String {
        if let Some(why) = &self.refused {
            return format!(
                "cannot read Redis's maxmemory-policy ({why}): give aftercall's Redis user `+info` \
                 (docs/security.md), or set {ALLOW_EVICTION}=true to run without knowing"
            );
        }
        let policy = self.maxmemory_policy.as_deref().unwrap_or("unknown");
        format!(
            "Redis's maxmemory-policy is `{policy}`: under memory pressure Redis would delete queued jobs and agent configs. \
             Set `maxmemory-policy noeviction` (redis.conf, `CONFIG SET maxmemory-policy noeviction`, or the managed \
             service's parameter group), or set {ALLOW_EVICTION}=true to run anyway"
        )
    }

    /// The warnings a deployment should see at start and in `/readyz`.
    pub fn warnings(&self, eviction_allowed: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.evicts() && eviction_allowed {
            out.push(format!(
                "{ALLOW_EVICTION}=true: running on an evicting Redis (maxmemory-policy `{}`); jobs may be lost",
                self.maxmemory_policy.as_deref().unwrap_or("unknown")
            ));
        }
        if self.persists_nothing() {
            out.push(
                "Redis persists nothing (no AOF, no RDB saves): a Redis restart loses every queued job; \
                 turn on `appendonly yes`"
                    .to_string(),
            );
        }
        out
    }
}

/// `CONFIG GET name`'s value; `None` where `CONFIG` is renamed, disabled or refused
/// (then what `INFO` said stands).
async fn config_get(conn: &mut Conn, slot: Option<u16>, name: &str) -> Option<String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    config_value(conn::on_slot_primary(conn, slot, cmd).await.ok()?)
}

/// `CONFIG GET name` answers `[name, value]` (RESP2) or `{name: value}` (RESP3).
fn config_value(v: Value) -> Option<String> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .nth(1)
            .and_then(|v| redis::from_redis_value(v).ok()),
        Value::Map(pairs) => pairs
            .into_iter()
            .next()
            .and_then(|(_, v)| redis::from_redis_value(v).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1000\r\nmaxmemory_policy:allkeys-lru\r\n\r\n# Persistence\r\naof_enabled:0\r\n# Stats\r\nevicted_keys:42\r\n";

    #[test]
    fn info_gives_the_policy_evictions_and_aof() {
        let f = RedisFacts::from_info(INFO);
        assert_eq!(f.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(f.evicted_keys, Some(42));
        assert_eq!(f.aof, Some(false));
        assert_eq!(f.rdb_saves, None);
        assert!(f.evicts());
    }

    #[test]
    fn only_noeviction_is_safe_and_unknown_is_not() {
        let with = |p: Option<&str>| RedisFacts {
            maxmemory_policy: p.map(str::to_string),
            ..RedisFacts::default()
        };
        assert!(!with(Some("noeviction")).evicts());
        for p in [
            Some("allkeys-lru"),
            Some("volatile-lru"),
            Some("allkeys-random"),
            Some("volatile-ttl"),
            None,
        ] {
            assert!(with(p).evicts(), "{p:?}");
        }
    }

    #[test]
    fn persistence_is_warned_about_only_when_known_to_be_off() {
        let f = |aof, rdb| RedisFacts {
            maxmemory_policy: Some("noeviction".into()),
            aof,
            rdb_saves: rdb,
            ..RedisFacts::default()
        };
        assert!(f(Some(false), Some(false)).persists_nothing());
        assert_eq!(f(Some(false), Some(false)).warnings(false).len(), 1);
        for (aof, rdb) in [
            (Some(true), Some(false)),
            (Some(false), Some(true)),
            (Some(false), None),
            (None, None),
        ] {
            assert!(f(aof, rdb).warnings(false).is_empty(), "{aof:?} {rdb:?}");
        }
    }

    #[test]
    fn the_problem_names_the_setting_and_both_fixes() {
        let f = RedisFacts::from_info(INFO);
        let line = f.eviction_problem();
        assert!(!line.contains('\n'));
        for needle in ["allkeys-lru", "maxmemory-policy noeviction", ALLOW_EVICTION] {
            assert!(line.contains(needle), "{line}");
        }
        assert_eq!(f.warnings(true).len(), 1);
    }

    #[test]
    fn a_refused_info_says_which_permission_is_missing() {
        let f = RedisFacts {
            refused: Some("NoPerm: this user has no permissions to run the 'info' command".into()),
            ..RedisFacts::default()
        };
        assert!(f.evicts());
        let line = f.eviction_problem();
        assert!(
            line.contains("`+info`") && line.contains(ALLOW_EVICTION),
            "{line}"
        );
    }

    #[test]
    fn config_get_answers_in_both_protocols() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"save".to_vec()),
            Value::BulkString(b"".to_vec()),
        ]);
        assert_eq!(config_value(resp2).as_deref(), Some(""));
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"maxmemory-policy".to_vec()),
            Value::BulkString(b"noeviction".to_vec()),
        )]);
        assert_eq!(config_value(resp3).as_deref(), Some("noeviction"));
        assert_eq!(config_value(Value::Array(vec![])), None);
    }
}
