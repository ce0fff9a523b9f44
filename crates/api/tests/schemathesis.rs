//! `/openapi.json` is true to the server both ways: schemathesis (`st run --checks all`)
//! sends what the document allows and what it forbids to the real API on a real socket
//! over a real Redis, and every answer must agree with the document.

mod common;

use std::process::Command;

use common::{ADMIN, call, start};

/// Cases per operation: enough to find what the 1,280-case run found, within
/// a minute or two on two cores.
const MAX_EXAMPLES: &str = "40";
/// The seed used under CI (`CI` set), so a failure there can be replayed.
const CI_SEED: &str = "20261203";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_difference_between_the_document_and_the_server() {
    let st = std::env::var("AFTERCALL_ST").unwrap_or_else(|_| "st".into());
    let version = Command::new(&st).arg("--version").output().ok();
    let Some(version) = version.filter(|o| o.status.success()) else {
        panic!(
            "schemathesis (`{st}`) is not installed; run `./dev test`, which installs it \
             (python3 -m pip install schemathesis)"
        );
    };

    let h = start().await;
    let (served, _) = h.serve_seeded().await;
    let base = served.base.clone();
    // Something to find, so reads are not all 404s: an agent, its dead letters.
    h.dead_letters_for(&call("c-dead", "agent_abc123")).await;

    let dir = std::env::temp_dir().join(format!("aftercall-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Enables every check (as `--checks all` would) and says where 422 answers data that
    // fits the schema; see the file.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let mut cmd = Command::new(&st);
    cmd.current_dir(&dir)
        .args(["--config-file", config])
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--generation-database", "none"])
        // One worker: CPython 3.11's `ast.parse`, which hypothesis calls to describe its
        // filters, is not thread-safe ("AST constructor recursion depth mismatch").
        .args(["--no-color", "--workers", "1"]);
    if std::env::var_os("CI").is_some() {
        cmd.args(["--seed", CI_SEED]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("st runs");
    let _ = std::fs::remove_dir_all(&dir);
    served.stop().await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        out.status.success(),
        "{} found differences between /openapi.json and the server:\n{text}",
        version.trim()
    );
    println!("{text}");
}
