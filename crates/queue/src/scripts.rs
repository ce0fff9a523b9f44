//! The Lua scripts, each prefixed with the shared helpers and loaded once per process.
//!
//! Each script's keys are named once, in its `-- KEYS` header line: the list becomes the
//! `local <name>_key = KEYS[i]` lines that open the script, and the same list fills the
//! invocation from [`Keys`]. The two sides cannot disagree on a position, and a script
//! that uses a name its list lacks fails at its first call (Redis refuses undeclared
//! globals).

use redis::{Script, ScriptInvocation};

use crate::keys::Keys;

const LIB: &str = include_str!("lua/lib.lua");

/// What opens the line of a script that names its keys, in `KEYS` order.
const KEYS_HEADER: &str = "-- KEYS (scripts.rs binds them as locals): ";

/// The key names of a script's header line: `<name>_key, …`, up to a note in brackets.
fn header_keys(body: &'static str) -> Option<Vec<&'static str>> {
    let line = body.lines().find_map(|l| l.strip_prefix(KEYS_HEADER))?;
    let mut keys = Vec::new();
    for item in line.split(", ") {
        let word = item.split(' ').next().unwrap_or_default();
        keys.push(word.strip_suffix("_key")?);
        if word.len() < item.len() {
            break;
        }
    }
    Some(keys)
}

/// A script and the names of its keys, in `KEYS` order.
pub struct QueueScript {
    script: Script,
    keys: Vec<&'static str>,
}

impl QueueScript {
    fn new(name: &str, body: &'static str) -> QueueScript {
        let keys =
            header_keys(body).unwrap_or_else(|| panic!("{name}.lua has no KEYS header (tested)"));
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
        for name in &self.keys {
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

/// Each script's name and source (its header names its keys).
const SOURCES: [(&str, &str); 16] = [
    ("enqueue", include_str!("lua/enqueue.lua")),
    ("fetch", include_str!("lua/fetch.lua")),
    ("finish", include_str!("lua/finish.lua")),
    ("fanout", include_str!("lua/fanout.lua")),
    ("renew", include_str!("lua/renew.lua")),
    ("replay", include_str!("lua/replay.lua")),
    ("purge", include_str!("lua/purge.lua")),
    ("sweep", include_str!("lua/sweep.lua")),
    // Its keys: a destination's semaphore (token -> expiry ms) and this second's start counter:
    // made per call by `Keys::limit` and `Keys::rate`.
    ("limit", include_str!("lua/limit.lua")),
    ("contact", include_str!("lua/contact.lua")),
    ("agent_cas", include_str!("lua/agent_cas.lua")),
    ("intake", include_str!("lua/intake.lua")),
    ("erase", include_str!("lua/erase.lua")),
    ("expire", include_str!("lua/expire.lua")),
    // Its key: the hash being rotated (the job data or the agent configs), given per call.
    ("rewrap", include_str!("lua/rewrap.lua")),
    // Its keys: a destination's health hash and held set (`Keys::health`, `Keys::held`), made per
    // call; the pauses and the destinations seen (`Keys::paused`, `Keys::destinations`).
    ("destination", include_str!("lua/destination.lua")),
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
                let [$($name,)*] = SOURCES.map(|(name, body)| QueueScript::new(name, body));
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

    #[test]
    fn the_fields_are_the_sources_in_order() {
        let names: Vec<&str> = SOURCES.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, NAMES);
    }

    /// Every script's header names its keys, each one a key of the queue (but those
    /// made per call), and the script never indexes `KEYS` itself.
    #[test]
    fn key_lists_are_read_from_the_headers_and_resolve() {
        let keys = Keys::new("p");
        for (name, body) in SOURCES {
            let list = header_keys(body).unwrap_or_else(|| panic!("{name}.lua's KEYS header"));
            assert!(!list.is_empty(), "{name}.lua lists no key");
            // Keys made per call (a destination's, a contact's, the hash being rotated).
            if !matches!(name, "contact" | "rewrap") {
                for k in list.iter().filter(|k| !MADE_PER_CALL.contains(k)) {
                    assert!(keys.named(k).is_some(), "{name}: {k} is not a key");
                }
            }
            assert!(!body.contains("KEYS["), "{name}.lua indexes KEYS itself");
        }
        assert_eq!(
            header_keys("-- KEYS (scripts.rs binds them as locals): a_key, b_key (x, y_key)"),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            header_keys("-- KEYS (scripts.rs binds them as locals): a, b"),
            None
        );
    }

    /// A key a script uses is on its list: every `<name>_key` it mentions is bound.
    #[test]
    fn scripts_use_only_their_own_keys() {
        for (name, body) in SOURCES {
            let list = header_keys(body).unwrap();
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
