//! What an attacker learns from error answers, through a real router and worker
//! processes: never the object store's endpoint, bucket or paths (those are in the
//! logs), and never more than a short, quoted piece of a name it sent (a 16 KiB model
//! name, version or input name is not reflected whole).
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use shardline_control::store::{Op, Txn};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Key;
use shardline_testkit::fleet::{Reply, TestFleet, infer_body, rows};

/// Longest error body accepted here: a message plus a 64-character echo, escaped.
const MAX_ERROR_BODY: usize = 600;

/// POSTs `body` to `path` on router 0 with `key`.
async fn post(fleet: &TestFleet, key: &str, path: &str, body: &Value) -> (u16, String) {
    let resp = fleet
        .http
        .post(format!("{}{path}", fleet.routers[0].url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Registers version `version` of acme/risk as a copy of version 1 stored at
/// `location` (not live, so nothing prefetches it).
async fn register_copy(fleet: &TestFleet, version: &str, location: &str) {
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();
    let v1 = Key::ModelVersion(model.clone(), "1".parse().unwrap());
    let mut m = fleet.cp.read::<Value>(&v1).await.unwrap().unwrap().value;
    m["version"] = json!(version);
    m["location"] = json!(location);
    let key = Key::ModelVersion(model, version.parse().unwrap());
    let txn = Txn::new().op(Op::put(fleet.cp.key(&key), m.to_string()));
    fleet.cp.store().txn(txn).await.unwrap();
    let revision = fleet.cp.store().position().await.unwrap().revision;
    fleet.wait_routers_at(revision).await;
}

fn assert_discloses_nothing(what: &str, status: u16, body: &str, secrets: &[String]) {
    assert!(
        body.len() <= MAX_ERROR_BODY,
        "{what}: {status} with {} bytes",
        body.len()
    );
    for secret in secrets {
        assert!(
            !body.contains(secret.as_str()),
            "{what}: {body} reveals {secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_reveal_no_store_details_and_echo_little() {
    let mut fleet = TestFleet::builder().workers(2).s3().start().await;
    let key = fleet.placed_model("acme", "risk", 2, 23).await;
    let s3 = fleet.s3();
    let secrets: Vec<String> = vec![
        s3.bucket().to_owned(),
        format!("127.0.0.1:{}", s3.port()),
        "s3://".into(),
        "http".into(),
        "nowhere".into(),
        "acme/risk".into(),
        // Names are echoed up to 64 characters, library messages up to 200 bytes.
        "x".repeat(200),
    ];
    let ok = post(
        &fleet,
        &key,
        "/v2/models/risk/infer",
        &infer_body(&rows(1, 0)),
    )
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);

    // Names a client sent, 16 KiB long: in the path (model, version) and in the body.
    let long = "x".repeat(16 << 10);
    let body = infer_body(&rows(1, 0));
    for (what, path, want) in [
        ("long model name", format!("/v2/models/{long}/infer"), 404),
        (
            "long version",
            format!("/v2/models/risk/versions/{long}/infer"),
            404,
        ),
    ] {
        let (status, text) = post(&fleet, &key, &path, &body).await;
        assert_eq!(status, want, "{what}: {text}");
        assert_discloses_nothing(what, status, &text, &secrets);
        assert!(
            text.contains("xxxx"),
            "{what}: the start is still shown: {text}"
        );
        assert!(!text.contains(&"x".repeat(65)), "{what}: {text}");
    }
    let ready = fleet
        .http
        .get(format!("{}/v2/models/{long}/ready", fleet.routers[0].url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let status = ready.status().as_u16();
    assert_discloses_nothing("ready", status, &ready.text().await.unwrap(), &secrets);
    let mut named = infer_body(&rows(1, 0));
    named["inputs"][0]["name"] = json!(long);
    named["outputs"] = json!([{"name": long}]);
    let (status, text) = post(&fleet, &key, "/v2/models/risk/infer", &named).await;
    assert_eq!(status, 400, "{text}");
    assert_discloses_nothing("long input name", status, &text, &secrets);
    // serde quotes an offending value whole in its messages.
    let typed = json!({"inputs": long});
    let (status, text) = post(&fleet, &key, "/v2/models/risk/infer", &typed).await;
    assert_eq!(status, 400, "{text}");
    assert_discloses_nothing("wrong type", status, &text, &secrets);

    // An artifact missing from the store: the worker logs the path, the client reads
    // only that it is missing.
    register_copy(&fleet, "3", "acme/risk/nowhere").await;
    let (status, text) = post(&fleet, &key, "/v2/models/risk/versions/3/infer", &body).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("not found"), "{text}");
    assert_discloses_nothing("missing artifact", status, &text, &secrets);

    // The store unreachable (a version no worker has loaded yet).
    register_copy(&fleet, "4", "acme/risk/1").await;
    fleet.s3().kill().await.unwrap();
    let reply = Reply::read(
        fleet
            .http
            .post(format!(
                "{}/v2/models/risk/versions/4/infer",
                fleet.routers[0].url
            ))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    let text = reply.body.to_string();
    assert!(text.contains("unavailable"), "{text}");
    assert_discloses_nothing("store unreachable", reply.status, &text, &secrets);
    // The resident version keeps serving.
    let ok = post(&fleet, &key, "/v2/models/risk/infer", &body).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
}
