//! A rollout as a risk team runs it, against real etcd, a real store, workers and a
//! router under steady load: publish v2 → shadow it (every sampled request is also
//! scored by v2 after its answer, and the router's measured difference, read back by
//! `shardctl compare`, equals what the two versions score apart when asked directly) →
//! canary at 10 % (the served share matches) → promote → roll back, with zero failed
//! requests; then a broken shadow version fails no served request and is counted, and a
//! shadow whose version cannot be loaded is refused with nothing written.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shardline_shared::keys::Section;
use shardline_testkit::fleet::ctl::{assert_refusals, ctl, ctl_json, model_dir, section_revisions};
use shardline_testkit::fleet::{TestFleet, infer_body, rows, steady_load};
use shardline_testkit::metric_sum;
use shardline_testkit::wait::eventually;

const SHADOW_REQUESTS: &str = "shardline_router_shadow_requests_total";

/// What version `version` scores for the rows `steady_load` sends.
async fn score(fleet: &TestFleet, key: &str, version: &str) -> Vec<f64> {
    let url = format!(
        "{}/v2/models/risk/versions/{version}/infer",
        fleet.routers[0].url
    );
    let resp = fleet
        .http
        .post(url)
        .bearer_auth(key)
        .json(&infer_body(&rows(1, 7)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

async fn shadow_count(fleet: &TestFleet, result: &str) -> f64 {
    let text = fleet.routers[0].metrics_text().await;
    metric_sum(&text, SHADOW_REQUESTS, Some(("result", result)))
}

fn shadow_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["shadow", "--tenant", "acme", "--model", "risk"];
    args.extend_from_slice(extra);
    args
}

async fn load(fleet: &TestFleet, key: &str, seconds: u64) {
    let report = steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        vec![(key.to_owned(), "risk".to_owned())],
        25,
        Duration::from_secs(seconds),
    )
    .await;
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert_eq!(report.ok, report.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_compare_canary_promote_rollback_and_a_broken_shadow_fail_nothing() {
    let fleet = TestFleet::builder()
        .workers(2)
        .routers(1)
        .router_arg("--per-model-metrics")
        .start()
        .await;
    let created = ctl_json(&fleet, &["tenant", "create", "acme", "--shard-size", "2"]).await;
    let key = created["api_key"].as_str().unwrap().to_owned();
    let dirs = [model_dir(1), model_dir(2), model_dir(3)];
    for (i, dir) in dirs.iter().enumerate() {
        let v = (i + 1).to_string();
        let mut args = vec![
            "publish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            &v,
        ];
        if i > 0 {
            args.push("--no-activate");
        }
        args.push(dir.path().to_str().unwrap());
        ctl_json(&fleet, &args).await;
    }
    eventually("v1 served", Duration::from_secs(10), || async {
        let reply = fleet.infer(0, &key, "risk", &rows(1, 7)).await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply)
        }
    })
    .await;
    // What the two versions score apart, asked directly.
    let (s1, s2) = (
        score(&fleet, &key, "1").await,
        score(&fleet, &key, "2").await,
    );
    let expected = s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(expected > 0.0, "two random models scored alike");

    // Refused with one line and nothing written.
    let before = section_revisions(&fleet, Section::Models).await;
    assert_refusals(
        &fleet,
        &[
            (shadow_args(&["--version", "1"]), 1, "already live"),
            (shadow_args(&["--version", "9"]), 1, "no version 9"),
            (
                shadow_args(&["--version", "2", "--percent", "150"]),
                2,
                "0 to 100",
            ),
            (shadow_args(&["--clear", "--version", "2"]), 2, ""),
        ],
    )
    .await;
    assert_eq!(
        section_revisions(&fleet, Section::Models).await,
        before,
        "a refusal wrote something"
    );

    // Shadow v2 at 100 %: loaded on both members first, then every answer compared.
    let set = ctl_json(&fleet, &shadow_args(&["--version", "2"])).await;
    assert_eq!(set["shadow"]["percent"], 100.0, "{set}");
    assert_eq!(set["prefetched"].as_array().unwrap().len(), 2, "{set}");
    let models = ctl_json(&fleet, &["models", "--tenant", "acme"]).await;
    assert_eq!(models["models"][0]["shadow"]["version"], "2");
    eventually(
        "the router has the shadow",
        Duration::from_secs(10),
        || async {
            let _ = fleet.infer(0, &key, "risk", &rows(1, 7)).await;
            let n = shadow_count(&fleet, "compared").await;
            if n > 0.0 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    load(&fleet, &key, 4).await;
    eventually("100 comparisons", Duration::from_secs(10), || async {
        let n = shadow_count(&fleet, "compared").await;
        if n >= 100.0 { Ok(()) } else { Err(n) }
    })
    .await;
    let text = fleet.routers[0].metrics_text().await;
    let count = metric_sum(&text, "shardline_router_shadow_abs_diff_count", None);
    let sum = metric_sum(&text, "shardline_router_shadow_abs_diff_sum", None);
    assert!(count >= 100.0, "{count}");
    let mean = sum / count;
    assert!(
        (mean - expected).abs() <= 1e-6 + expected * 1e-4,
        "mean measured difference {mean}, the versions score {expected} apart"
    );
    assert_eq!(shadow_count(&fleet, "error").await, 0.0);
    // shardctl compare reads the same from the router's metrics, for this model.
    let url = fleet.routers[0].metrics_url.clone();
    let c = ctl_json(
        &fleet,
        &[
            "compare", "--tenant", "acme", "--model", "risk", "--router", &url,
        ],
    )
    .await;
    assert_eq!(c["per_model"], true, "{c}");
    assert!(c["compared"].as_f64().unwrap() >= 100.0, "{c}");
    assert_eq!(c["errors"], 0.0, "{c}");
    for field in ["mean", "max"] {
        let v = c[field].as_f64().unwrap();
        assert!(
            (v - expected).abs() <= 1e-6 + expected * 1e-4,
            "{field}: {c}"
        );
    }
    // Every difference is the same, so p99 lies in the bucket holding it.
    let p99 = c["p99"].as_f64().unwrap();
    let bounds = [
        0.0,
        1e-6,
        1e-4,
        1e-3,
        0.01,
        0.05,
        0.1,
        0.2,
        0.5,
        1.0,
        f64::INFINITY,
    ];
    let upper = bounds.iter().copied().find(|b| *b >= expected).unwrap();
    let lower = bounds
        .iter()
        .copied()
        .filter(|b| *b < expected)
        .fold(0.0, f64::max);
    assert!(
        lower <= p99 && p99 <= upper,
        "p99 {p99} outside ({lower}, {upper}]: {c}"
    );
    let other = ctl_json(
        &fleet,
        &[
            "compare", "--tenant", "acme", "--model", "other", "--router", &url,
        ],
    )
    .await;
    assert_eq!(other["compared"], 0.0, "{other}");

    // Then the rest of a rollout under steady load: canary 10 % → promote → roll back.
    let steady = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        vec![(key.clone(), "risk".to_owned())],
        25,
        Duration::from_secs(6),
    ));
    ctl_json(
        &fleet,
        &[
            "canary",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "2",
            "--percent",
            "10",
        ],
    )
    .await;
    eventually("the canary serves", Duration::from_secs(10), || async {
        let counts = fleet.version_counts(0, &key, "risk", 32).await;
        if counts.contains_key("2") {
            Ok(())
        } else {
            Err(counts)
        }
    })
    .await;
    let counts = fleet.version_counts(0, &key, "risk", 2_000).await;
    let share = counts.get("2").copied().unwrap_or(0) as f64 / 2_000.0;
    // 4σ of 2,000 draws at 10 %.
    assert!(
        (share - 0.10).abs() <= 0.027,
        "canary share {share}: {counts:?}"
    );
    let promoted = ctl_json(
        &fleet,
        &[
            "activate",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "2",
        ],
    )
    .await;
    assert_eq!(promoted["live"], "2");
    let models = ctl_json(&fleet, &["models", "--tenant", "acme"]).await;
    // Promoting the shadow's version ends the shadow too (it would compare with itself).
    assert!(models["models"][0]["canary"].is_null(), "{models}");
    assert!(models["models"][0]["shadow"].is_null(), "{models}");
    for (step, version) in [("promoted", "2"), ("rolled back", "1")] {
        if step == "rolled back" {
            let back = ctl_json(&fleet, &["rollback", "--tenant", "acme", "--model", "risk"]).await;
            assert_eq!(back["live"], "1");
        }
        eventually(step, Duration::from_secs(10), || async {
            let counts = fleet.version_counts(0, &key, "risk", 64).await;
            if counts.keys().eq([version].iter()) {
                Ok(())
            } else {
                Err(counts)
            }
        })
        .await;
    }
    let report = steady.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert_eq!(report.ok, report.sent);

    // v3's weights are corrupted in the store: loading it first fails, nothing written.
    fleet
        .store
        .put(
            "acme/risk/3/model.safetensors",
            Bytes::from_static(b"not safetensors"),
        )
        .await
        .unwrap();
    let before = section_revisions(&fleet, Section::Models).await;
    let run = ctl(&fleet, &shadow_args(&["--version", "3"])).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("loading version 3"), "{}", run.stderr);
    assert_eq!(
        section_revisions(&fleet, Section::Models).await,
        before,
        "a failed prefetch wrote"
    );
    // Forced: every shadow request fails; no served one does.
    ctl_json(&fleet, &shadow_args(&["--version", "3", "--no-prefetch"])).await;
    let errors = shadow_count(&fleet, "error").await;
    load(&fleet, &key, 3).await;
    eventually("shadow errors counted", Duration::from_secs(10), || async {
        let n = shadow_count(&fleet, "error").await - errors;
        if n >= 50.0 { Ok(()) } else { Err(n) }
    })
    .await;

    let cleared = ctl_json(&fleet, &shadow_args(&["--clear"])).await;
    assert!(cleared["shadow"].is_null(), "{cleared}");
}
