//! The Lua scripts, each prefixed with the shared helpers and loaded once per process.

use redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

pub struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub finish: Script,
    pub fanout: Script,
    pub renew: Script,
    pub replay: Script,
    pub purge: Script,
    pub sweep: Script,
    pub limit: Script,
    pub agent_cas: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            finish: script(include_str!("lua/finish.lua")),
            fanout: script(include_str!("lua/fanout.lua")),
            renew: script(include_str!("lua/renew.lua")),
            replay: script(include_str!("lua/replay.lua")),
            purge: script(include_str!("lua/purge.lua")),
            sweep: script(include_str!("lua/sweep.lua")),
            limit: script(include_str!("lua/limit.lua")),
            agent_cas: script(include_str!("lua/agent_cas.lua")),
        }
    }
}
