//! Extreme values reaching a real worker (etcd, moto's S3, the worker's `serve()`):
//! manifest sizes near `u64::MAX` are refused as larger than the budget, never wrapped
//! into a small reservation (or a panic), and an exponent of any length is a 400.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use shardline_control::store::{Op, Txn};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Key;
use shardline_testkit::models::MlpArtifact;
use support::{Workers, assert_close};

/// Registers version `version` of acme/risk: version 1's manifest with `edit` applied.
async fn register(
    fleet: &shardline_testkit::fleet::TestFleet,
    version: &str,
    edit: fn(&mut Value),
) {
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();
    let v1 = Key::ModelVersion(model.clone(), "1".parse().unwrap());
    let mut m = fleet.cp.read::<Value>(&v1).await.unwrap().unwrap().value;
    m["version"] = json!(version);
    edit(&mut m);
    let key = Key::ModelVersion(model, version.parse().unwrap());
    let txn = Txn::new().op(Op::put(fleet.cp.key(&key), m.to_string()));
    fleet.cp.store().txn(txn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_near_u64_max_are_refused_and_huge_exponents_are_400() {
    let fleet = support::fleet().await;
    let model = MlpArtifact::random(&[4, 3, 1], 31);
    fleet.publish_model("acme", "risk", "1", &model).await;
    register(&fleet, "2", |m| m["weights_file"]["size"] = json!(u64::MAX)).await;
    register(&fleet, "3", |m| {
        m["weights_file"]["size"] = json!(u64::MAX - 1);
        m["config_file"]["size"] = json!(u64::MAX - 1);
    })
    .await;
    let worker = fleet.worker("w-1", 16 << 20, "10m").await;

    let body =
        r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    for version in ["2", "3"] {
        let resp = worker
            .http
            .post(worker.endpoint(&format!("/v2/models/acme.risk/versions/{version}/infer")))
            .header("x-shardline-token", shardline_testkit::TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 507, "version {version}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("budget"), "{text}");
    }
    // Nothing was reserved or broken: version 1 loads and scores.
    let got = worker.score("acme.risk", &[0.5; 4], 1).await;
    assert_close(&got, &model.reference(&[0.5; 4], 1));

    for number in [
        "1e99999999999999999999",
        "-7.5E+000000000000000000000000000000000400",
    ] {
        let body = format!(
            r#"{{"inputs":[{{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3,{number}]}}]}}"#
        );
        let resp = worker.infer("acme.risk", body).await;
        assert_eq!(resp.status(), 400, "{number}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("out of range"), "{number}: {text}");
    }
    worker.stop().await;
}
