//! The Lua scripts, each prefixed with the shared helpers and loaded once per process.
//!
//! Each script's keys are named once, here, beside the file they belong to: the list
//! becomes the `local <name>_key = KEYS[i]` lines that open the script, and the same list
//! fills the invocation from [`Keys`]. The two sides cannot disagree on a position, and
//! a script that uses a name its list lacks fails at its first call (Redis refuses
//! undeclared globals).

use redis::{Script, ScriptInvocation};

use crate::keys::Keys;

const LIB: &str = include_str!("lua/lib.lua");

/// A script and the names of its keys, in `KEYS` order.
pub struct QueueScript {
    script: Script,
    keys: &'static [&'static str],
}

impl QueueScript {
    fn new(body: &str, keys: &'static [&'static str]) -> QueueScript {
        let mut src = String::with_capacity(LIB.len() + body.len() + 40 * keys.len());
        src.push_str(LIB);
        src.push('\n');
        for (i, name) in keys.iter().enumerate() {
            src.push_str(&format!("local {name}_key = KEYS[{}]\n", i + 1));
        }
        src.push_str(body);
        QueueScript {
            script: Script::new(&src),
            keys,
        }
    }

    /// A call with the queue's keys of this script's list.
    pub fn invocation<'a>(&'a self, keys: &Keys) -> ScriptInvocation<'a> {
        let mut inv = self.script.prepare_invoke();
        for name in self.keys {
            inv.key(
                keys.named(name)
                    .expect("every fixed key name is one of Keys (tested)"),
            );
        }
        inv
    }

    /// A call with keys made for it (a destination's limit keys), in the list's order.
    pub fn invocation_with<'a>(&'a self, values: &[&str]) -> ScriptInvocation<'a> {
        assert_eq!(values.len(), self.keys.len(), "one value per key name");
        let mut inv = self.script.prepare_invoke();
        for v in values {
            inv.key(*v);
        }
        inv
    }
}

/// Each script's source and key list.
const SOURCES: [(&str, &str, &[&str]); 16] = [
    (
        "enqueue",
        include_str!("lua/enqueue.lua"),
        &[
            "calls",
            "calls_log",
            "ready",
            "data",
            "state",
            "attempts",
            "max",
            "notify",
        ],
    ),
    (
        "fetch",
        include_str!("lua/fetch.lua"),
        &[
            "ready",
            "running",
            "scheduled",
            "dead",
            "data",
            "state",
            "attempts",
            "max",
            "log",
            "lease",
            "notify",
            "done",
            "completion",
            "pending",
        ],
    ),
    (
        "finish",
        include_str!("lua/finish.lua"),
        &[
            "ready",
            "running",
            "scheduled",
            "dead",
            "done",
            "state",
            "attempts",
            "log",
            "lease",
            "notify",
            "completion",
            "pending",
        ],
    ),
    (
        "fanout",
        include_str!("lua/fanout.lua"),
        &[
            "ready",
            "running",
            "scheduled",
            "done",
            "data",
            "state",
            "attempts",
            "max",
            "log",
            "lease",
            "fanout",
            "refs",
            "notify",
            "completion",
            "pending",
        ],
    ),
    (
        "renew",
        include_str!("lua/renew.lua"),
        &["running", "lease"],
    ),
    (
        "replay",
        include_str!("lua/replay.lua"),
        &[
            "dead",
            "ready",
            "state",
            "attempts",
            "log",
            "notify",
            "completion",
            "pending",
        ],
    ),
    (
        "purge",
        include_str!("lua/purge.lua"),
        &[
            "dead", "data", "state", "attempts", "max", "log", "lease", "refs", "done", "audit",
        ],
    ),
    (
        "sweep",
        include_str!("lua/sweep.lua"),
        &[
            "done",
            "data",
            "state",
            "attempts",
            "max",
            "log",
            "calls",
            "calls_log",
            "fanout",
            "analysis",
            "refs",
            "completion",
            "pending",
        ],
    ),
    // A destination's semaphore (token -> expiry ms) and this second's start counter:
    // made per call by `Keys::limit` and `Keys::rate`.
    ("limit", include_str!("lua/limit.lua"), &["sem", "rate"]),
    (
        "contact",
        include_str!("lua/contact.lua"),
        &["optouts", "sent"],
    ),
    ("agent_cas", include_str!("lua/agent_cas.lua"), &["agents"]),
    (
        "intake",
        include_str!("lua/intake.lua"),
        &[
            "calls",
            "calls_log",
            "ready",
            "scheduled",
            "data",
            "state",
            "max",
            "notify",
            "analysis",
        ],
    ),
    (
        "erase",
        include_str!("lua/erase.lua"),
        &[
            "calls",
            "fanout",
            "analysis",
            "ready",
            "scheduled",
            "running",
            "dead",
            "done",
            "state",
            "log",
            "lease",
            "audit",
            "completion",
            "pending",
        ],
    ),
    (
        "expire",
        include_str!("lua/expire.lua"),
        &["done", "data", "log", "analysis", "payload_cursor"],
    ),
    // The hash being rotated (the job data or the agent configs), given per call.
    ("rewrap", include_str!("lua/rewrap.lua"), &["target"]),
    // A destination's health hash and held set (`Keys::health`, `Keys::held`), made per
    // call; the pauses and the destinations seen (`Keys::paused`, `Keys::destinations`).
    (
        "destination",
        include_str!("lua/destination.lua"),
        &[
            "health",
            "held",
            "paused",
            "destinations",
            "scheduled",
            "notify",
        ],
    ),
];

/// The scripts by name, built from [`SOURCES`] in its order (a test holds the names
/// and the order together).
macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        pub struct Scripts {
            $(pub $name: QueueScript,)*
        }

        impl Scripts {
            pub fn new() -> Scripts {
                let [$($name,)*] = SOURCES.map(|(_, body, keys)| QueueScript::new(body, keys));
                Scripts { $($name,)* }
            }
        }

        #[cfg(test)]
        const NAMES: &[&str] = &[$(stringify!($name),)*];
    };
}

scripts!(
    enqueue,
    fetch,
    finish,
    fanout,
    renew,
    replay,
    purge,
    sweep,
    limit,
    contact,
    agent_cas,
    intake,
    erase,
    expire,
    rewrap,
    destination,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Key names of the scripts' lists that `Keys` makes per call rather than names.
    const MADE_PER_CALL: [&str; 6] = ["sem", "rate", "health", "held", "paused", "destinations"];

    /// Every name resolves to a key of the queue (but those made per call), and
    /// each script's header comment lists the same names in the same order.
    #[test]
    fn the_fields_are_the_sources_in_order() {
        let names: Vec<&str> = SOURCES.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn key_lists_resolve_and_match_the_headers() {
        let keys = Keys::new("p");
        for (name, body, list) in SOURCES {
            // Keys made per call (a destination's, a contact's, the hash being rotated).
            if !matches!(name, "contact" | "rewrap") {
                for k in list.iter().filter(|k| !MADE_PER_CALL.contains(k)) {
                    assert!(keys.named(k).is_some(), "{name}: {k} is not a key");
                }
            }
            let header = body
                .lines()
                .find_map(|l| l.strip_prefix("-- KEYS (scripts.rs binds them as locals): "))
                .unwrap_or_else(|| panic!("{name}.lua has no KEYS header"));
            let named: Vec<String> = list.iter().map(|k| format!("{k}_key")).collect();
            assert!(
                header.starts_with(&named.join(", ")),
                "{name}.lua's header says {header}, scripts.rs {named:?}"
            );
            assert!(!body.contains("KEYS["), "{name}.lua indexes KEYS itself");
        }
    }

    /// A key a script uses is on its list: every `<name>_key` it mentions is bound.
    #[test]
    fn scripts_use_only_their_own_keys() {
        for (name, body, list) in SOURCES {
            let mut rest = body;
            while let Some(at) = rest.find("_key") {
                let start = rest[..at]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                let word = &rest[start..at];
                let after = rest[at + 4..].chars().next();
                let whole = !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if whole && !word.is_empty() {
                    assert!(
                        list.contains(&word),
                        "{name}.lua uses {word}_key, not on its list"
                    );
                }
                rest = &rest[at + 4..];
            }
        }
    }
}
