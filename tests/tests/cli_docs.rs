//! `aftercall completions <shell>` and `aftercall man`: printed without Redis or a valid
//! configuration; the bash script passes `bash -n`; the manual page renders with groff
//! without a warning (`./dev test` installs groff-base).

use std::process::{Command, Output};

use aftercall_tests::{bin, run_ok};

/// The CLI with a configuration that would stop any other command.
fn aftercall(args: &[&str]) -> Output {
    run_ok(
        Command::new(bin("aftercall"))
            .args(args)
            .env("AFTERCALL_REDIS_URL", "redis://127.0.0.1:1")
            .env("AFTERCALL_REDIS_TIMEOUT", "not-a-duration"),
        &format!("aftercall {args:?}"),
    )
}

#[test]
fn completion_scripts_cover_the_commands_and_bash_accepts_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(aftercall(&["completions", shell]).stdout).unwrap();
        assert!(script.len() > 1000, "{shell}: {script}");
        for word in ["enqueue", "dlq", "replay", "dry-run", "completions"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let script = aftercall(&["completions", "bash"]).stdout;
    let dir = std::env::temp_dir().join(format!("aftercall-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("aftercall.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded into a shell, it completes the subcommands.
    let words = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(aftercall dl); COMP_CWORD=1; COMP_LINE='aftercall dl'; COMP_POINT=12; _aftercall aftercall dl aftercall; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&words.stdout).trim(), "dlq");
    let _ = std::fs::remove_dir_all(&dir);

    let bad = Command::new(bin("aftercall"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn the_manual_page_renders_and_each_subcommand_gets_one() {
    let page = String::from_utf8(aftercall(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH aftercall 1"), "{page}");
    for word in [
        "SUBCOMMANDS",
        "enqueue",
        "dlq",
        "completions",
        "\\-\\-redis\\-url",
    ] {
        assert!(page.contains(word), "the page lacks {word}:\n{page}");
    }
    let dir = std::env::temp_dir().join(format!("aftercall-man-{}", std::process::id()));
    aftercall(&["man", "--dir", dir.to_str().unwrap()]);
    let replay = std::fs::read_to_string(dir.join("aftercall-dlq-replay.1")).unwrap();
    assert!(replay.contains("\\-\\-dry\\-run"), "{replay}");
    for name in ["aftercall.1", "aftercall-enqueue.1", "aftercall-stats.1"] {
        let path = dir.join(name);
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff runs (./dev test installs groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
