//! `aftercall-worker demo --keep-running`, as an operator meets it: the process prints
//! one one-time login link; opening it logs a browser in (a session cookie, then the
//! dashboard showing the sample calls in every outcome); opening it again fails; SIGTERM
//! stops everything.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aftercall_tests::bin;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Redirects by hand: the login's cookie is on the redirect itself.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The process's stdout lines until one satisfies `want` (or the deadline passes).
fn read_until(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let hit = want(&line);
                seen.push(line.clone());
                if hit {
                    return Some(line);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_prints_a_one_time_login_link_to_a_dashboard_with_every_outcome() {
    let dir =
        std::env::temp_dir().join(format!("aftercall-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("demo.log");
    let mut child = Command::new(bin("aftercall-worker"))
        .args(["demo", "--keep-running", "--api-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("AFTERCALL_API_TOKENS")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the demo");
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen = Vec::new();
    let line = read_until(&lines, &mut seen, Duration::from_secs(120), |l| {
        l.contains("/ui/login/")
    });
    let out = || seen.join("\n");
    let Some(line) = line else {
        panic!(
            "no login link printed; stdout:\n{}\nstderr:\n{}",
            out(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains("/ui/login/"))
        .expect("a URL on the line")
        .to_string();
    let base = url.split("/ui/login/").next().unwrap().to_string();
    // Every outcome was reached before the link was printed.
    let samples = out();
    for shows in [
        "delivered: ",
        "retried, then delivered: webhook delivered after 2 attempt(s)",
        "skipped (post_call_follow_up is disabled)",
        "webhook dead after 1 attempt(s)",
    ] {
        assert!(samples.contains(shows), "{shows:?} not in:\n{samples}");
    }
    let retry_call = samples
        .split_whitespace()
        .find(|w| w.starts_with("demo_") && w.ends_with("_retry"))
        .expect("the retried sample's call id")
        .to_string();
    let refused_call = retry_call.replace("_retry", "_refused");
    // The rest of the message: what to try next.
    let next = read_until(&lines, &mut seen, Duration::from_secs(10), |l| {
        l.contains("Ctrl-C")
    });
    assert!(next.is_some(), "{}", seen.join("\n"));
    let all = seen.join("\n");
    assert!(all.contains("replay the dead letter"), "{all}");
    assert!(all.contains("watch the preview"), "{all}");
    assert_eq!(
        all.matches("/ui/login/").count(),
        1,
        "one login line: {all}"
    );

    let http = client();
    // Without a session the dashboard asks for a login.
    let anon = http.get(format!("{base}/ui/")).send().await.unwrap();
    assert!(anon.status().is_redirection(), "{}", anon.status());

    let first = http.get(&url).send().await.unwrap();
    assert_eq!(
        first.status().as_u16(),
        303,
        "the link logs in and redirects"
    );
    assert_eq!(first.headers()["location"], "/ui/");
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let page = |path: String| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            let r = http
                .get(path)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, overview) = page(format!("{base}/ui/")).await;
    assert_eq!(status, 200, "{overview}");
    assert!(overview.contains("Dead letters"), "{overview}");
    let (status, calls) = page(format!("{base}/ui/calls?call_id={retry_call}")).await;
    assert_eq!(status, 200, "{calls}");
    assert!(calls.contains(&retry_call), "{calls}");
    assert!(calls.contains("delivered"), "{calls}");
    let (status, dead) = page(format!("{base}/ui/dead-letters")).await;
    assert_eq!(status, 200, "{dead}");
    assert!(dead.contains(&refused_call), "{dead}");

    // The link works once.
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 410);
    assert!(again.headers().get("set-cookie").is_none());
    assert!(again.text().await.unwrap().contains("used already"));

    // SIGTERM stops the demo (worker, API and its Redis) cleanly.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = child.0.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{stderr}");
    // The link's code appears in the demo's stdout only.
    let code = url.rsplit('/').next().unwrap();
    assert!(!stderr.contains(code), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
