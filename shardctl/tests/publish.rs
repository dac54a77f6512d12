//! `shardctl publish`, `activate` and `rollback` as an operator runs them: a real process
//! against real etcd, moto's S3 and a real fleet under steady load, every command with
//! `--json` parsed, and malformed models refused with nothing written.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shardline_artifacts::FetchError;
use shardline_shared::keys::Section;
use shardline_shared::manifest::FileDigest;
use shardline_testkit::fleet::ctl::{ctl, ctl_json, model_dir, section_revisions, write_model};
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
    let models_before = section_revisions(&fleet, Section::Models).await;
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
            sha256: shardline_shared::digest::Sha256Sum::from_bytes([0; 32]),
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
        section_revisions(&fleet, Section::Models).await,
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
