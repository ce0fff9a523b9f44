//! What operators install, checked against the real thing: every metric that
//! `deploy/prometheus/alerts.yml` and `deploy/grafana/aftercall.json` query is one a
//! running worker exports on /metrics (with the labels and values they select), and the
//! Kubernetes manifests hold together. (`./dev test` also runs `promtool check rules`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aftercall_tests::{World, run_ok};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// A metric selector in a PromQL expression: its name and its label matchers
/// (`label`, `op`, `value`).
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// PromQL keywords that read like identifiers; the ones that take a label list are
/// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that are never a metric here: binary operators, modifiers, and aggregations
/// (which may be followed by `by (…)` rather than by their parenthesis).
const KEYWORDS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric selectors of a PromQL expression (and of Grafana's `label_values(metric,
/// label)`): every identifier that is not a function, a keyword or in a label list.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            *i += 1;
        }
        *i += 1;
    };
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            skip_to(&mut i, c);
        } else if c == '[' {
            skip_to(&mut i, ']');
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let j = next_non_space(i);
            let next = chars.get(j).copied();
            if LABEL_LISTS.contains(&ident.as_str()) && next == Some('(') {
                i = j + 1;
                skip_to(&mut i, ')');
            } else if ident == "label_values" && next == Some('(') {
                // Grafana's label_values(metric{…}, label): the metric, then a label.
                let inner_end = chars[j..].iter().position(|&c| c == ')').unwrap() + j;
                let inner: String = chars[j + 1..inner_end].iter().collect();
                if let Some((metric, _label)) = inner.rsplit_once(',') {
                    out.extend(selectors(metric));
                }
                i = inner_end + 1;
            } else if next == Some('(') || KEYWORDS.contains(&ident.as_str()) {
                // A function or an aggregation: its arguments are read as they come.
            } else {
                let mut matchers = Vec::new();
                if next == Some('{') {
                    let end = chars[j..].iter().position(|&c| c == '}').unwrap() + j;
                    let body: String = chars[j + 1..end].iter().collect();
                    for m in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                        let op_at = m.find(['=', '!']).expect("a matcher has an operator");
                        let (label, rest) = m.split_at(op_at);
                        let op_len = if rest.starts_with("=~")
                            || rest.starts_with("!~")
                            || rest.starts_with("!=")
                        {
                            2
                        } else {
                            1
                        };
                        let value = rest[op_len..].trim().trim_matches('"');
                        matchers.push((
                            label.trim().to_string(),
                            rest[..op_len].to_string(),
                            value.to_string(),
                        ));
                    }
                    i = end + 1;
                }
                out.push(Selector {
                    name: ident,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_promql_reader_finds_metrics_and_only_metrics() {
    let got = selectors(
        r#"histogram_quantile(0.99, sum by (le, action) (rate(aftercall_x_bucket{op="fetch", q=~"$q"}[$__rate_interval]))) > 1e3 and on (queue) max without (a) (b_total offset 5m) / bool topk(10, c)"#,
    );
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["aftercall_x_bucket", "b_total", "c"]);
    assert_eq!(
        got[0].matchers,
        [
            ("op".into(), "=".into(), "fetch".into()),
            ("q".into(), "=~".into(), "$q".into())
        ]
    );
    let got = selectors("label_values(aftercall_queue_depth{state=\"dead\"}, queue)");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "aftercall_queue_depth");
    assert_eq!(
        selectors(r#"max by (policy) (m{policy!="noeviction"}) == 1"#)[0].matchers[0].1,
        "!="
    );
}

/// The `expr:` values of a Prometheus rules file (one line, or a `|`/`>` block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let rest = line[at + 5..].trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.trim_matches(['"', '\'']).to_string());
        }
    }
    out
}

/// Every query of a Grafana dashboard: panel targets' `expr` and template variables'
/// queries.
fn grafana_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => grafana_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| grafana_queries(v, out)),
        _ => {}
    }
}

/// A scrape: each exported name (histograms' `_bucket`, `_sum` and `_count` included)
/// with the label sets of its samples.
fn exported(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut names: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut parts = t.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.entry(name.to_string()).or_default();
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            for s in suffixes {
                names.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let end = line.rfind('}').unwrap();
                for pair in line[name_end + 1..end].split("\",") {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        labels.insert(k.trim().to_string(), v.trim_end_matches('"').to_string());
                    }
                }
            }
            names
                .entry(line[..name_end].to_string())
                .or_default()
                .push(labels);
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_dashboard_query_only_metrics_a_worker_exports() {
    let mut w = World::new().await;
    let base = w.with_admin_api().base;
    let _worker = w.worker();
    let http = aftercall_testkit::http_client();

    // Scrape once the worker has sent its first heartbeat (it counts itself alive).
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = http.get(format!("{base}/metrics")).send().await
            && r.status().is_success()
        {
            let text = r.text().await.unwrap();
            if text
                .lines()
                .any(|l| l.starts_with("aftercall_workers_alive{") && !l.ends_with(" 0"))
            {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no worker alive on /metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = exported(&text);

    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let alert_exprs = rule_exprs(&alerts);
    assert_eq!(
        alert_exprs.len(),
        alerts.matches("- alert:").count(),
        "one expr per alert"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/aftercall.json")).unwrap())
            .unwrap();
    let mut grafana_exprs = Vec::new();
    grafana_queries(&dashboard, &mut grafana_exprs);

    for (file, exprs, at_least) in [
        ("alerts.yml", alert_exprs, 7),
        ("aftercall.json", grafana_exprs, 10),
    ] {
        let mut used = BTreeSet::new();
        for expr in &exprs {
            let found = selectors(expr);
            assert!(!found.is_empty(), "{file}: no metric in {expr:?}");
            for s in found {
                let Some(samples) = exported.get(&s.name) else {
                    panic!(
                        "{file}: `{}` (in {expr:?}) is not exported; /metrics has:\n{}",
                        s.name,
                        exported.keys().cloned().collect::<Vec<_>>().join("\n")
                    );
                };
                // The labels it selects on exist, and an exact value is one a series
                // has (families whose series come later, per destination, have none yet).
                for (label, op, value) in &s.matchers {
                    if samples.is_empty() || value.starts_with('$') {
                        continue;
                    }
                    assert!(
                        samples.iter().any(|l| l.contains_key(label)),
                        "{file}: `{}` has no label `{label}` (in {expr:?})",
                        s.name
                    );
                    if op == "=" {
                        assert!(
                            samples.iter().any(|l| l.get(label) == Some(value)),
                            "{file}: no `{}` series has {label}=\"{value}\" (in {expr:?})",
                            s.name
                        );
                    }
                }
                used.insert(s.name);
            }
        }
        assert!(
            used.len() >= at_least,
            "{file} names only {used:?}: is the reader still finding them?"
        );
    }
}

#[test]
fn kubernetes_manifests_hold_together() {
    // Python's YAML reader (Debian's python3-yaml, installed by ./dev test): no YAML
    // crate is in the tree for this alone.
    let script = r#"
import glob, os, sys, yaml
os.chdir(sys.argv[1])
docs = {}
for f in sorted(glob.glob("*.yaml")):
    for d in yaml.safe_load_all(open(f)):
        docs[d["kind"]] = d
kust = docs["Kustomization"]
for r in kust["resources"]:
    assert os.path.exists(r), r
dep, svc, pdb, secret = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"], docs["Secret"]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
sub = lambda sel: all(labels.get(k) == v for k, v in sel.items())
assert dep["spec"]["selector"]["matchLabels"] == labels or sub(dep["spec"]["selector"]["matchLabels"])
assert sub(svc["spec"]["selector"]), "the Service selects the pods"
assert sub(pdb["spec"]["selector"]["matchLabels"]), "the PDB selects the pods"
c = pod["spec"]["containers"][0]
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
env = {e["name"]: e for e in c["env"]}
for name in ("AFTERCALL_REDIS_URL", "AFTERCALL_API_TOKENS"):
    ref = env[name]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"], name
    assert ref["key"] in secret["stringData"], name
port = env["AFTERCALL_API_ADDR"]["value"].rsplit(":", 1)[1]
assert any(str(p["containerPort"]) == port for p in c["ports"])
grace = int(env["AFTERCALL_GRACE"]["value"].rstrip("s"))
assert pod["spec"]["terminationGracePeriodSeconds"] > grace
assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
print("ok")
"#;
    run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(deploy("kubernetes")),
        "the manifest check",
    );
}

/// The two figures sampled for the "nothing runs" alerts, as an API-only replica reports
/// them while nothing fetches: no worker alive, and the queued call's age growing.
#[tokio::test(flavor = "multi_thread")]
async fn without_workers_the_oldest_queued_job_ages_on_metrics() {
    let mut w = World::new().await;
    let base = w.with_admin_api().base;
    w.set("AFTERCALL_ROLE", "api");
    w.push("call-waiting", "agent-1").await;
    let _api = w.worker();
    let http = aftercall_testkit::http_client();
    let value = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/metrics")).send().await
            && r.status().is_success()
        {
            let text = r.text().await.unwrap();
            let prefix = format!("queue=\"{}\"", w.prefix);
            assert!(text.contains(&prefix), "{text}");
            assert_eq!(value(&text, "aftercall_workers_alive"), Some(0.0), "{text}");
            if value(&text, "aftercall_oldest_queued_age_seconds").is_some_and(|age| age >= 1.0) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the queued call's age never rose"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
