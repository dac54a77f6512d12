//! The shipped observability against a live fleet: `promtool check metrics` accepts the
//! `/metrics` of a real router and worker, and a real Prometheus (Debian's, started with
//! the Kubernetes job of `deploy/prometheus/prometheus.yml`, its discovery swapped for a
//! file of the same pod labels, and the shipped alert rules) scrapes the fleet under load
//! while every PromQL expression of `deploy/grafana/*.json` must return data. Dashboards
//! tagged `per-model-metrics` are checked on a fleet started with `--per-model-metrics`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::records::TenantLimits;
use shardline_shared::rollout::{FULL, Shadow};
use shardline_testkit::fleet::{TestFleet, infer_body, rows};
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::models::publish::publish;
use support::prometheus::{Prometheus, metrics_urls, repo_root, tool};
use tokio::io::AsyncWriteExt as _;

/// The tenant whose models take the load (and that `$tenant` stands for).
const TENANT: &str = "acme";
/// Models of `TENANT`: more than fit in a worker's budget at once, so loads evict.
const MODELS: [&str; 4] = ["m0", "m1", "m2", "m3"];
/// What the dashboards' variables become in queries.
const VARIABLES: [(&str, &str); 6] = [
    ("$__rate_interval", "30s"),
    ("$__interval", "5s"),
    ("$__range", "5m"),
    ("${datasource}", ""),
    ("$worker", ".*"),
    ("$tenant", TENANT),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_have_data_on_a_live_fleet() {
    check_fleet(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_have_data_with_per_model_metrics() {
    check_fleet(true).await;
}

async fn check_fleet(per_model: bool) {
    let mut builder = TestFleet::builder()
        .workers(2)
        .routers(1)
        // Two of the load's models and a third one loading do not fit: loads evict for
        // memory, and what is left is evicted as idle once the load stops.
        .memory_budget("4MiB")
        .idle_ttl("3s");
    if per_model {
        builder = builder
            .router_arg("--per-model-metrics")
            .worker_arg("--per-model-metrics");
    }
    let fleet = builder.start().await;
    let key = fleet.tenant(TENANT, Some(2)).await;
    for (i, model) in MODELS.iter().enumerate() {
        // 64 → 512 → 512 → 1: about 1.2 MB resident, 2.4 MB while loading.
        let m = MlpArtifact::random(&[shardline_testkit::fleet::DIM, 512, 512, 1], i as u64);
        publish(&fleet.store, &fleet.cp, TENANT, model, "1", &m)
            .await
            .unwrap();
    }
    // A shadow of m0 (version 2, every request) for the Rollouts panels.
    let m0 = ModelKey::parse_shard_key(&format!("{TENANT}/{}", MODELS[0])).unwrap();
    let v2 = MlpArtifact::random(&[shardline_testkit::fleet::DIM, 16, 1], 99);
    publish(&fleet.store, &fleet.cp, TENANT, MODELS[0], "2", &v2)
        .await
        .unwrap();
    let one = VersionId::new("1").unwrap();
    fleet.cp.set_live(&m0, &one).await.unwrap();
    let shadow = Shadow {
        version: VersionId::new("2").unwrap(),
        basis_points: FULL,
    };
    fleet.cp.set_shadow(&m0, Some(shadow)).await.unwrap();
    let limited = fleet
        .tenant_with(
            "limited",
            Some(2),
            TenantLimits {
                max_in_flight: 0,
                rate_per_sec: 1,
            },
        )
        .await;
    fleet.publish("limited", "small", "1", 9).await;

    for (name, url) in metrics_urls(&fleet) {
        promtool_check_metrics(&fleet.http, &name, &url).await;
    }

    let prometheus = Prometheus::start(&fleet).await;
    prometheus.wait_targets_up(metrics_urls(&fleet).len()).await;

    load(&fleet, &key, &limited).await;

    prometheus.check_rules_loaded().await;
    // The load did what the panels are meant to show, not only zeros (idle evictions
    // come TTL 3 s + a 0.75 s sweep after the load, then a scrape).
    for activity in [
        r#"sum(shardline_worker_evictions_total{reason="memory"}) > 0"#,
        r#"sum(shardline_worker_evictions_total{reason="idle"}) > 0"#,
        r#"sum(shardline_worker_model_loads_total{result="ok"}) > 4"#,
        "sum(shardline_worker_cold_start_wait_seconds_count) > 0",
        r#"sum(shardline_router_requests_total{code=~"401|404|429"}) > 0"#,
        r#"sum(shardline_router_tenant_limited_total{limit="rate"}) > 0"#,
        "sum(shardline_placement_writes_total) > 0",
        r#"sum(shardline_router_shadow_requests_total{result="compared"}) > 0"#,
    ] {
        prometheus.wait_for(activity, Duration::from_secs(20)).await;
    }
    let names = prometheus.metric_names().await;
    let mut failures = vec![];
    let mut checked = 0;
    for (dashboard, panel, expr) in dashboard_exprs(per_model) {
        checked += 1;
        for name in metric_names_in(&expr) {
            if !names.contains(&name) {
                failures.push(format!("{dashboard} / {panel}: no series named {name}"));
            }
        }
        let query = substitute(&expr);
        match prometheus.query(&query).await {
            Ok(0) => failures.push(format!("{dashboard} / {panel}: no data for {query}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{dashboard} / {panel}: {e}: {query}")),
        }
    }
    assert!(
        checked > 10,
        "only {checked} expressions found in deploy/grafana"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard expressions failed (per-model metrics: {per_model}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fails unless `promtool check metrics` accepts what `url` serves.
async fn promtool_check_metrics(http: &reqwest::Client, name: &str, url: &str) {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains("shardline_build_info{"),
        "{name}: no shardline_build_info in:\n{text}"
    );
    let mut child = tokio::process::Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused {name}'s /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Traffic that makes every dashboard series move: scores over models that do not all
/// fit (loads, cold starts, memory evictions), unknown models (404), a bad key (401),
/// and a rate-limited tenant (429).
async fn load(fleet: &TestFleet, key: &str, limited: &str) {
    let url = fleet.routers[0].url.clone();
    let body = serde_json::to_vec(&infer_body(&rows(2, 3))).unwrap();
    let until = Instant::now() + Duration::from_secs(8);
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..3 {
        let (http, url, body, key) = (
            fleet.http.clone(),
            url.clone(),
            body.clone(),
            key.to_owned(),
        );
        tasks.spawn(async move {
            let mut codes = vec![];
            let mut i = lane;
            while Instant::now() < until {
                let model = MODELS[i % MODELS.len()];
                i += 1;
                let resp = http
                    .post(format!("{url}/v2/models/{model}/infer"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                codes.push(resp.status().as_u16());
            }
            codes
        });
    }
    let post = |key: &str, model: &str| {
        fleet
            .http
            .post(format!("{url}/v2/models/{model}/infer"))
            .bearer_auth(key)
            .json(&infer_body(&rows(1, 1)))
            .send()
    };
    let mut other = vec![];
    for _ in 0..5 {
        other.push(post(key, "no-such-model").await.unwrap().status().as_u16());
        other.push(post("not-a-key", "m0").await.unwrap().status().as_u16());
        other.push(post(limited, "small").await.unwrap().status().as_u16());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut codes = vec![];
    while let Some(lane) = tasks.join_next().await {
        codes.extend(lane.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!(ok >= 10, "too few scored requests: {codes:?}");
    for want in [404, 401, 429] {
        assert!(other.contains(&want), "no {want} among {other:?}");
    }
}

/// Every `(dashboard title, panel title, expr)` of `deploy/grafana/*.json`; without
/// `per_model`, dashboards tagged `per-model-metrics` are left out.
fn dashboard_exprs(per_model: bool) -> Vec<(String, String, String)> {
    let dir = repo_root().join("deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut out = vec![];
    for file in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let tagged = d["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "per-model-metrics"));
        if tagged && !per_model {
            continue;
        }
        let title = d["title"].as_str().unwrap_or_default().to_owned();
        let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
        while let Some(p) = panels.pop() {
            if let Some(nested) = p["panels"].as_array() {
                panels.extend(nested);
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let panel = p["title"].as_str().unwrap_or_default().to_owned();
                    out.push((title.clone(), panel, expr.to_owned()));
                }
            }
        }
    }
    out
}

/// `expr` with the dashboard variables replaced; panics on one it does not know.
fn substitute(expr: &str) -> String {
    let mut q = expr.to_owned();
    for (var, value) in VARIABLES {
        q = q.replace(var, value);
    }
    assert!(!q.contains('$'), "unknown variable in {expr}");
    q
}

/// The `shardline_*` metric names `expr` refers to.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("shardline_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
