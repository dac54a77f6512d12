//! `shardctl` as an operator runs it: a real process against real etcd, a real store
//! (moto's S3 for publishing) and a real fleet. Every command is run with `--json` at
//! least once and its output parsed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shardline_artifacts::FetchError;
use shardline_shared::keys::{Prefix, Section};
use shardline_shared::manifest::FileDigest;
use shardline_testkit::fleet::ctl::{ctl, ctl_at, ctl_json, model_dir, write_model};
use shardline_testkit::fleet::{DIM, TestFleet, rows, steady_load};
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::wait::eventually;

/// Scores through the router until the answer comes from `version`.
async fn wait_version(fleet: &TestFleet, key: &str, version: &str) {
    let what = format!("served {version}");
    eventually(&what, Duration::from_secs(10), || async {
        let reply = fleet.infer(0, key, "risk", &rows(1, 3)).await;
        if reply.status == 200 && reply.body["model_version"] == version {
            Ok(())
        } else {
            Err(reply)
        }
    })
    .await;
}

/// Every key and mod_revision under one section (to prove nothing was written).
async fn section(fleet: &TestFleet, s: Section) -> Vec<(String, i64)> {
    let listing = fleet
        .cp
        .store()
        .list(&Prefix::default().section(s))
        .await
        .unwrap();
    listing
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_activate_rollback_without_a_failed_request() {
    let fleet = TestFleet::builder()
        .workers(2)
        .routers(1)
        .s3()
        .start()
        .await;
    let created = ctl_json(&fleet, &["tenant", "create", "acme", "--shard-size", "2"]).await;
    assert_eq!(created["tenant"], "acme");
    let key = created["api_key"].as_str().unwrap().to_owned();

    let (v1, v2) = (model_dir(1), model_dir(2));
    let p1 = ctl_json(
        &fleet,
        &[
            "publish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "1",
            v1.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        (p1["version"].as_str(), p1["live"].as_bool()),
        (Some("1"), Some(true))
    );
    assert_eq!(p1["weights_file"]["sha256"].as_str().unwrap().len(), 64);
    wait_version(&fleet, &key, "1").await;
    let p2 = ctl_json(
        &fleet,
        &[
            "publish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "2",
            "--no-activate",
            v2.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(p2["live"], false);
    let models = ctl_json(&fleet, &["models", "--tenant", "acme"]).await;
    assert_eq!(models["models"][0]["live"], "1");
    assert_eq!(models["models"][0]["versions"].as_array().unwrap().len(), 2);

    // Switch to v2 and back under light load: not one request may fail.
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        vec![(key.clone(), "risk".to_owned())],
        25,
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = ctl_json(
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
    assert_eq!(
        (a["live"].as_str(), a["previous"].as_str()),
        (Some("2"), Some("1"))
    );
    wait_version(&fleet, &key, "2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = ctl_json(&fleet, &["rollback", "--tenant", "acme", "--model", "risk"]).await;
    assert_eq!(
        (r["live"].as_str(), r["previous"].as_str()),
        (Some("1"), Some("2"))
    );
    wait_version(&fleet, &key, "1").await;
    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert_eq!(report.ok, report.sent);

    // Malformed models fail before anything is written, with a precise message.
    let models_before = section(&fleet, Section::Models).await;
    let good = MlpArtifact::random(&[DIM, 16, 1], 3);
    let config = String::from_utf8(good.config_json.clone()).unwrap();
    let cases: [(&str, String, Vec<u8>, &str); 4] = [
        (
            "bad-config",
            config.replace("shardline/v1", "shardline/v7"),
            good.weights.clone(),
            "config.json: unsupported format \"shardline/v7\"",
        ),
        (
            "missing",
            config.replace("layers.1.bias", "layers.1.offset"),
            good.weights.clone(),
            "model.safetensors: missing tensor \"layers.1.offset\"",
        ),
        (
            "shape",
            config.replace(&format!("\"dim\": {DIM}"), "\"dim\": 65"),
            good.weights.clone(),
            "model.safetensors: tensor \"layers.0.weight\" has shape [16, 64], expected [16, 65]",
        ),
        (
            "not-st",
            config.clone(),
            b"definitely not safetensors".to_vec(),
            "model.safetensors: weights are not a valid safetensors file",
        ),
    ];
    for (model, config, weights, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), config.as_bytes(), &weights);
        let run = ctl(
            &fleet,
            &[
                "publish",
                "--tenant",
                "acme",
                "--model",
                model,
                "--version",
                "1",
                dir.path().to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(run.code, 1, "{model}: {run:?}");
        assert!(run.stderr.contains(message), "{model}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        let absent = FileDigest {
            sha256: "0".repeat(64),
            size: 1,
        };
        for file in ["config.json", "model.safetensors"] {
            let got = fleet
                .store
                .fetch(&format!("acme/{model}/1/{file}"), &absent, u64::MAX)
                .await;
            assert!(
                matches!(got, Err(FetchError::NotFound { .. })),
                "{model}/{file}: {got:?}"
            );
        }
    }
    assert_eq!(
        section(&fleet, Section::Models).await,
        models_before,
        "etcd was written"
    );

    // Keys rotate; tenants never show keys; unpublish and delete refuse what is unsafe.
    let rotated = ctl_json(&fleet, &["tenant", "rotate-key", "acme"]).await;
    assert_eq!(rotated["tenant"], "acme");
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    eventually("the old key refused", Duration::from_secs(5), || async {
        fleet.infer(0, &key, "risk", &rows(1, 1)).await.status == 401
    })
    .await;
    assert_eq!(
        fleet.infer(0, &new_key, "risk", &rows(1, 1)).await.status,
        200
    );
    let tenants = ctl_json(&fleet, &["tenants"]).await;
    assert_eq!(tenants["tenants"][0]["keys"], 1);
    assert!(!tenants.to_string().contains(&new_key));
    let live = ctl(
        &fleet,
        &[
            "unpublish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "1",
        ],
    )
    .await;
    assert_eq!(live.code, 1, "{live:?}");
    assert!(live.stderr.contains("is live"), "{}", live.stderr);
    let gone = ctl_json(
        &fleet,
        &[
            "unpublish",
            "--tenant",
            "acme",
            "--model",
            "risk",
            "--version",
            "2",
        ],
    )
    .await;
    assert_eq!(gone["unpublished"], true);
    let refused = ctl(&fleet, &["tenant", "delete", "acme", "--json"]).await;
    assert_eq!(refused.code, 1);
    assert_eq!(refused.json()["exit_code"], 1);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    let deleted = ctl_json(&fleet, &["tenant", "delete", "acme", "--force"]).await;
    assert_eq!(deleted["deleted"], true);
}

/// Live members of every assignment, from `assignments --json`.
async fn shards(fleet: &TestFleet) -> Vec<(String, Vec<String>, Vec<String>)> {
    let v = ctl_json(fleet, &["assignments"]).await;
    let names = |x: &Value| -> Vec<String> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    };
    v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = format!(
                "{}/{}",
                a["tenant"].as_str().unwrap(),
                a["model"].as_str().unwrap()
            );
            (name, names(&a["workers"]), names(&a["previous"]))
        })
        .collect()
}

/// Waits until there are `n` assignments of `k` members each and no `previous`.
/// Every value written to an assignment key since `before` (a listing), as epochs per
/// key in commit order, starting with the epoch the listing held.
async fn assignment_history(
    fleet: &TestFleet,
    before: shardline_control::store::Listing,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    use futures::StreamExt as _;
    use shardline_control::store::{Event, WatchItem};
    let epoch = |v: &[u8]| {
        serde_json::from_slice::<Value>(v).unwrap()["epoch"]
            .as_u64()
            .unwrap()
    };
    let mut history: std::collections::BTreeMap<String, Vec<u64>> = before
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), vec![epoch(&kv.value)]))
        .collect();
    let prefix = Prefix::default().section(Section::Assignments);
    let end = fleet.cp.store().list(&prefix).await.unwrap().revision;
    let mut stream = fleet
        .cp
        .store()
        .watch(&prefix, before.revision + 1)
        .await
        .unwrap();
    let mut changed = std::collections::BTreeSet::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        let WatchItem::Batch { events, .. } = item.unwrap() else {
            panic!("history compacted");
        };
        // The first batch may be the watch's creation notice (no events): stop only once
        // the event that brought the store to `end` has been seen.
        let mut reached = end <= before.revision;
        for event in events {
            reached |= event.mod_revision() >= end;
            match event {
                Event::Put(kv) => {
                    changed.insert(kv.key.clone());
                    history
                        .entry(kv.key.clone())
                        .or_default()
                        .push(epoch(&kv.value));
                }
                Event::Delete { key, .. } => {
                    history.remove(&key);
                }
            }
        }
        if reached {
            break;
        }
    }
    history.retain(|k, _| changed.contains(k));
    history
}

async fn wait_settled(fleet: &TestFleet, n: usize, k: usize) {
    eventually("settled", Duration::from_secs(20), || async {
        let all = shards(fleet).await;
        if all.len() == n && all.iter().all(|(_, w, p)| w.len() == k && p.is_empty()) {
            Ok(())
        } else {
            Err(all)
        }
    })
    .await;
}

/// Slot load of `worker` from `workers --json`.
async fn slots(fleet: &TestFleet, worker: &str) -> (u64, u64) {
    let v = ctl_json(fleet, &["workers"]).await;
    let row = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == worker);
    row.map_or((0, 0), |r| {
        (
            r["slots"].as_u64().unwrap(),
            r["previous_slots"].as_u64().unwrap(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_onto_new_workers_then_drain_under_load() {
    let mut fleet = TestFleet::builder().workers(4).routers(1).start().await;
    let mut targets = vec![];
    for t in 0..3 {
        let tenant = format!("t{t}");
        let key = fleet.tenant(&tenant, Some(2)).await;
        for m in 0..4 {
            fleet
                .publish(&tenant, &format!("m{m}"), "1", t * 4 + m)
                .await;
            targets.push((key.clone(), format!("m{m}")));
        }
    }
    wait_settled(&fleet, 12, 2).await;

    // A fifth worker: the plan moves shards onto it only, and --apply balances it.
    fleet.add_worker().await;
    let plan = ctl_json(&fleet, &["rebalance"]).await;
    let changes = plan["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{plan}");
    for c in changes {
        assert_eq!(c["added"], serde_json::json!(["w-4"]), "{c}");
        assert_eq!(c["removed"].as_array().unwrap().len(), 1, "{c}");
    }
    assert!(plan["applied"].is_null());
    let text = ctl(&fleet, &["rebalance"]).await;
    assert!(
        text.stdout.contains(" +w-4\n") && text.stdout.contains("dry run"),
        "{}",
        text.stdout
    );
    let applied = ctl_json(&fleet, &["rebalance", "--apply"]).await;
    assert_eq!(
        applied["applied"]["swapped"].as_u64().unwrap() as usize,
        changes.len(),
        "{applied}"
    );
    let cap = ctl_json(&fleet, &["blast-radius"]).await["load"]["cap"]
        .as_u64()
        .unwrap();
    let (on_new, _) = slots(&fleet, "w-4").await;
    assert!(
        on_new > 0 && on_new <= cap,
        "w-4 holds {on_new} slots, cap {cap}"
    );
    let again = ctl_json(&fleet, &["rebalance"]).await;
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    wait_settled(&fleet, 12, 2).await;

    // A sixth worker and two operators applying at once: CAS lets no update be lost.
    fleet.add_worker().await;
    let before = fleet
        .cp
        .store()
        .list(&Prefix::default().section(Section::Assignments))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        ctl(&fleet, &["rebalance", "--apply", "--json"]),
        ctl(&fleet, &["rebalance", "--apply", "--json"])
    );
    for run in [&a, &b] {
        assert!(run.code == 0 || run.code == 3, "{run:?}");
        if run.code == 3 {
            assert!(
                run.stderr.contains("conflict") && run.stderr.contains("re-run"),
                "{run:?}"
            );
            assert_eq!(run.json()["exit_code"], 3);
        }
    }
    // No lost update: every write of an assignment sets `epoch` to the epoch it read
    // plus one, so in etcd's history of each key the epochs must rise by exactly one per
    // write. Two writers that both read epoch e and both committed would show e + 1 twice.
    let writes = assignment_history(&fleet, before).await;
    assert!(!writes.is_empty(), "the applies wrote something");
    for (key, epochs) in &writes {
        for pair in epochs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{key}: epochs {epochs:?}: an update was lost"
            );
        }
    }
    // Whatever the interleaving, what was committed is intact and a re-run converges.
    wait_settled(&fleet, 12, 2).await;
    let rerun = ctl_json(&fleet, &["rebalance", "--apply"]).await;
    assert!(
        rerun["changes"].as_array().unwrap().len() <= changes.len(),
        "{rerun}"
    );
    wait_settled(&fleet, 12, 2).await;
    let last = ctl_json(&fleet, &["rebalance"]).await;
    assert_eq!(last["changes"], serde_json::json!([]), "{last}");
    for (name, workers, _) in shards(&fleet).await {
        assert_eq!(
            workers.iter().collect::<BTreeSet<_>>().len(),
            2,
            "{name}: {workers:?}"
        );
    }
    let blast = ctl_json(&fleet, &["blast-radius"]).await;
    assert!(blast["load"]["max"].as_u64().unwrap() <= blast["load"]["cap"].as_u64().unwrap());

    // Cordon and uncordon.
    let c = ctl_json(&fleet, &["cordon", "w-1"]).await;
    assert_eq!(c["state"], "cordoned");
    let w = ctl_json(&fleet, &["workers"]).await;
    assert!(
        w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "w-1" && r["state"] == "cordoned")
    );
    assert_eq!(
        ctl_json(&fleet, &["uncordon", "w-1"]).await["state"],
        "active"
    );

    // Drain w-0 under load: no failed request, and it ends with nothing.
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        targets,
        30,
        Duration::from_secs(6),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = slots(&fleet, "w-0").await.0;
    assert!(before > 0);
    let drained = ctl_json(&fleet, &["drain", "w-0", "--timeout", "60s"]).await;
    assert_eq!(drained["drained"], true, "{drained}");
    assert_eq!(slots(&fleet, "w-0").await, (0, 0));
    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(
        shards(&fleet)
            .await
            .iter()
            .all(|(_, w, p)| !w.contains(&"w-0".into()) && !p.contains(&"w-0".into()))
    );
    let no_wait = ctl_json(&fleet, &["drain", "w-0", "--no-wait"]).await;
    assert_eq!(no_wait["shards"], 0);
}

#[tokio::test]
async fn errors_are_one_line_with_distinct_exit_codes() {
    let run = ctl_at("http://127.0.0.1:1", None, &["workers"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("shardctl: etcd unreachable at http://127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let json = ctl_at("http://127.0.0.1:1", None, &["tenants", "--json"]).await;
    assert_eq!(json.json()["exit_code"], 1);

    let usage = ctl_at("http://127.0.0.1:1", None, &["tenant", "create"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    let cmd_run = ctl_at(
        "http://127.0.0.1:1",
        None,
        &["rebalance", "--apply", "--internal-token", "short"],
    )
    .await;
    assert_eq!(cmd_run.code, 2, "{cmd_run:?}");
    assert!(
        cmd_run.stderr.contains("--internal-token"),
        "{}",
        cmd_run.stderr
    );
    let help = ctl_at("http://127.0.0.1:1", None, &["publish", "--help"]).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Example"), "{}", help.stdout);

    // A malformed model is refused before etcd is even contacted.
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), b"{\"format\": \"shardline/v1\"}", b"");
    let run = ctl_at(
        "http://127.0.0.1:1",
        None,
        &[
            "publish",
            "--tenant",
            "a",
            "--model",
            "m",
            "--version",
            "1",
            "--store",
            "file:///tmp",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("shardctl: config.json is not valid"),
        "{}",
        run.stderr
    );
}
