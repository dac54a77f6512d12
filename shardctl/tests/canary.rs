//! `shardctl canary` as an operator runs it, against real etcd, a real store, workers
//! and a router under steady load: the served versions follow the canary's share, a
//! sticky canary keeps each route key on one version, `activate` promotes it and
//! `--clear` ends it without one failed request; bad input is refused with nothing
//! written.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use shardline_shared::keys::Section;
use shardline_testkit::fleet::ctl::{assert_refusals, ctl, ctl_json, model_dir, section_revisions};
use shardline_testkit::fleet::{TestFleet, infer_body, rows, steady_load};
use shardline_testkit::wait::eventually;

/// The version that served one unpinned request, with an optional route key (or the
/// status when it was not a success).
async fn try_served(fleet: &TestFleet, key: &str, route_key: Option<&str>) -> Result<String, u16> {
    let mut req = fleet
        .http
        .post(format!("{}/v2/models/risk/infer", fleet.routers[0].url))
        .bearer_auth(key)
        .json(&infer_body(&rows(1, 5)));
    if let Some(k) = route_key {
        req = req.header("x-shardline-route-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status);
    }
    let body: Value = resp.json().await.unwrap();
    Ok(body["model_version"].as_str().unwrap().to_owned())
}

/// The version that served one request, which must succeed.
async fn served(fleet: &TestFleet, key: &str, route_key: Option<&str>) -> String {
    try_served(fleet, key, route_key).await.unwrap()
}

/// Waits until every one of 64 unpinned requests is served by `version`.
async fn only_version(fleet: &TestFleet, key: &str, version: &str) {
    let what = format!("every answer from {version}");
    eventually(&what, Duration::from_secs(10), || async {
        let counts = fleet.version_counts(0, key, "risk", 64).await;
        if counts.keys().eq([version].iter()) {
            Ok(())
        } else {
            Err(counts)
        }
    })
    .await;
}

fn canary_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["canary", "--tenant", "acme", "--model", "risk"];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_sticky_promote_and_clear_without_a_failed_request() {
    let fleet = TestFleet::builder().workers(2).routers(1).start().await;
    let created = ctl_json(&fleet, &["tenant", "create", "acme", "--shard-size", "2"]).await;
    let key = created["api_key"].as_str().unwrap().to_owned();
    let (v1, v2, v3) = (model_dir(1), model_dir(2), model_dir(3));
    for (v, dir, more) in [
        ("1", &v1, None),
        ("2", &v2, Some("--no-activate")),
        ("3", &v3, Some("--no-activate")),
    ] {
        let mut args = vec![
            "publish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            v,
        ];
        args.extend(more);
        args.push(dir.path().to_str().unwrap());
        ctl_json(&fleet, &args).await;
    }
    eventually("v1 served", Duration::from_secs(10), || async {
        match try_served(&fleet, &key, None).await {
            Ok(v) if v == "1" => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // Refused, with one line, a usage or failure status, and nothing written.
    let before = section_revisions(&fleet, Section::Models).await;
    assert_refusals(
        &fleet,
        &[
            (
                canary_args(&["--version", "9", "--percent", "10"]),
                1,
                "no version 9",
            ),
            (
                canary_args(&["--version", "1", "--percent", "10"]),
                1,
                "already live",
            ),
            (
                canary_args(&["--version", "2", "--percent", "101"]),
                2,
                "0 to 100",
            ),
            (canary_args(&["--version", "2", "--percent", "-3"]), 2, ""),
            (canary_args(&["--version", "2"]), 2, "--percent"),
            (canary_args(&["--clear", "--version", "2"]), 2, ""),
            (canary_args(&[]), 2, ""),
        ],
    )
    .await;
    assert_eq!(
        section_revisions(&fleet, Section::Models).await,
        before,
        "a refusal wrote something"
    );

    // Steady load across every change below: not one request may fail.
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        vec![(key.clone(), "risk".to_owned())],
        25,
        Duration::from_secs(12),
    ));

    // 10 % to v2: the share of 10,000 unpinned requests is 10 % ± 1 point.
    let set = ctl_json(&fleet, &canary_args(&["--version", "2", "--percent", "10"])).await;
    assert_eq!(set["canary"]["version"], "2");
    assert_eq!(set["canary"]["percent"], 10.0);
    // Loaded on both members of the shard before the canary was written.
    let mut prefetched: Vec<&str> = set["prefetched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    prefetched.sort();
    assert_eq!(prefetched, ["w-0", "w-1"], "{set}");
    eventually(
        "v2 resident on both members",
        Duration::from_secs(10),
        || async {
            let held: Vec<String> = section_revisions(&fleet, Section::Resident)
                .await
                .into_iter()
                .map(|(key, _)| key)
                .filter(|k| k.ends_with("/acme/risk/2"))
                .collect();
            if held.len() == 2 { Ok(()) } else { Err(held) }
        },
    )
    .await;
    let models = ctl_json(&fleet, &["models", "--tenant", "acme"]).await;
    assert_eq!(models["models"][0]["canary"]["version"], "2");
    assert_eq!(models["models"][0]["live"], "1");
    eventually("a canary answer", Duration::from_secs(10), || async {
        let v = served(&fleet, &key, None).await;
        if v == "2" { Ok(()) } else { Err(v) }
    })
    .await;
    let counts = fleet.version_counts(0, &key, "risk", 10_000).await;
    let share = counts.get("2").copied().unwrap_or(0) as f64 / 10_000.0;
    eprintln!("canary share of 10,000 unpinned requests at 10 %: {share}");
    // The target is ±1 point; one σ of 10,000 draws at 10 % is 0.3 point, so the test
    // allows 4σ (1.2 points: a false failure once in ~15,000 runs, not once in 1,000).
    assert!(
        (share - 0.10).abs() <= 0.012,
        "canary share {share}: {counts:?}"
    );
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["1", "2"], "{counts:?}");

    // Sticky at 30 %: each route key sees one version; about 30 % of keys see v2.
    ctl_json(
        &fleet,
        &canary_args(&["--version", "2", "--percent", "30", "--sticky"]),
    )
    .await;
    eventually("sticky canary applied", Duration::from_secs(10), || async {
        let models = ctl_json(&fleet, &["models", "--tenant", "acme"]).await;
        let c = &models["models"][0]["canary"];
        // The router watches the same key: give it the same chance to see it.
        if c["sticky"] == true && c["percent"] == 30.0 {
            Ok(())
        } else {
            Err(c.clone())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_canary = 0;
    for user in 0..200 {
        let route_key = format!("user-{user}");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(served(&fleet, &key, Some(&route_key)).await);
        }
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "{route_key} saw {seen:?}"
        );
        on_canary += usize::from(seen[0] == "2");
    }
    assert!(
        (35..=85).contains(&on_canary),
        "{on_canary} of 200 keys on the canary"
    );

    // Promote: v2 becomes live and the canary ends, in one write.
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
    assert_eq!(models["models"][0]["live"], "2");
    assert!(models["models"][0]["canary"].is_null(), "{models}");
    only_version(&fleet, &key, "2").await;

    // A canary of v3, which cannot be unpublished while it is one; then abort it.
    let v3 = ctl_json(
        &fleet,
        &canary_args(&["--version", "3", "--percent", "50", "--no-prefetch"]),
    )
    .await;
    assert_eq!(v3["prefetched"], serde_json::json!([]), "{v3}");
    let run = ctl(
        &fleet,
        &[
            "unpublish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "3",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("canary"), "{}", run.stderr);
    let cleared = ctl_json(&fleet, &canary_args(&["--clear"])).await;
    assert!(cleared["canary"].is_null(), "{cleared}");
    only_version(&fleet, &key, "2").await;

    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert_eq!(report.ok, report.sent);
}
