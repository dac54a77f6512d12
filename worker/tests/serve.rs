//! The worker end to end: real etcd, moto's S3 and the worker's `serve()` on loopback.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use bytes::Bytes;
use shardline_shared::WorkerId;
use shardline_shared::keys::Key;
use shardline_shared::manifest::WEIGHTS_FILE;
use shardline_shared::records::{ResidentRecord, WorkerRecord};
use shardline_testkit::TOKEN;
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::wait::eventually;
use support::{Workers, assert_close};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_scores_correctly_and_fifty_cold_requests_load_once() {
    let fleet = support::fleet().await;
    let model = MlpArtifact::random(&[16, 32, 1], 1);
    fleet.publish_model("acme", "risk", "1", &model).await;
    let worker = fleet.worker("w-1", 64 << 20, "10m").await;

    let rows = 3;
    let input: Vec<f32> = (0..rows * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let http = worker.http.clone();
            let url = worker.endpoint("/v2/models/acme.risk/infer");
            let body = serde_json::json!({"id": "req-7", "inputs": [{"name": "features", "shape": [rows, 16], "datatype": "FP32", "data": input}]});
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("x-shardline-token", TOKEN)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            })
        })
        .collect();
    let want = model.reference(&input, rows);
    for h in handles {
        let (status, text) = h.await.unwrap();
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["model_name"], "acme.risk");
        assert_eq!(v["model_version"], "1");
        assert_eq!(v["id"], "req-7");
        assert_eq!(v["outputs"][0]["shape"], serde_json::json!([rows, 1]));
        let got: Vec<f32> = v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_close(&got, &want);
    }
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        1.0,
        "fifty concurrent cold requests, one load"
    );

    // The worker is registered and publishes what it holds: one leased key per
    // resident model, the record itself untouched by loads.
    let id = WorkerId::new("w-1").unwrap();
    let key = fleet.cp.key(&Key::Worker(id.clone()));
    let resident_prefix = fleet.cp.prefix().worker_residents(&id);
    let resident_key = format!("{resident_prefix}acme/risk/1");
    eventually(
        "resident model published to etcd",
        Duration::from_secs(6),
        || async {
            let listing = fleet.cp.store().list(&resident_prefix).await.unwrap();
            listing.kvs.len() == 1
                && listing.kvs[0].key == resident_key
                && serde_json::from_slice::<ResidentRecord>(&listing.kvs[0].value)
                    .is_ok_and(|r| r.bytes == model.resident_bytes())
        },
    )
    .await;
    let kv = fleet.cp.store().get(&key).await.unwrap().unwrap();
    let rec: WorkerRecord = serde_json::from_slice(&kv.value).unwrap();
    assert!(rec.resident.is_empty() && rec.used_bytes == 0, "{rec:?}");
    worker.stop().await;
    assert!(
        fleet.cp.store().get(&key).await.unwrap().is_none(),
        "clean shutdown deregisters at once"
    );
    assert!(
        fleet
            .cp
            .store()
            .list(&resident_prefix)
            .await
            .unwrap()
            .kvs
            .is_empty(),
        "and its resident keys go with its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_for_three_of_five_models_is_never_exceeded() {
    let fleet = support::fleet().await;
    let models: Vec<MlpArtifact> = (0..5)
        .map(|i| MlpArtifact::random(&[64, 1024, 1], 10 + i))
        .collect();
    for (i, m) in models.iter().enumerate() {
        fleet.publish_model("acme", &format!("m{i}"), "1", m).await;
    }
    let size = models[0].resident_bytes();
    // Three resident models plus one load in progress (file + built copy) fit in 4.5
    // model sizes; a fourth resident model plus a load would not.
    let budget = size * 9 / 2;
    let worker = fleet.worker("w-1", budget, "10m").await;
    let input: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    for round in 0..3 {
        for (i, m) in models.iter().enumerate() {
            let got = worker.score(&format!("acme.m{i}"), &input, 1).await;
            assert_close(&got, &m.reference(&input, 1));
            let index = worker.index().await;
            let bytes: u64 = index.iter().map(|e| e["bytes"].as_u64().unwrap()).sum();
            assert!(bytes <= budget, "round {round}: {bytes} > {budget}");
            assert!(index.len() <= 3, "round {round}: {} resident", index.len());
            let accounted = worker.metric("shardline_worker_resident_bytes").await;
            assert!(accounted <= budget as f64);
        }
    }
    let evictions = worker
        .metric("shardline_worker_evictions_total{reason=\"memory\"}")
        .await;
    assert!(
        evictions >= 12.0,
        "cycling 5 through room for 3 evicts: {evictions}"
    );
    assert_eq!(
        worker.metric("shardline_worker_capacity_bytes").await,
        budget as f64
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_models_are_evicted_after_the_ttl() {
    let fleet = support::fleet().await;
    let model = MlpArtifact::random(&[8, 4, 1], 3);
    fleet.publish_model("acme", "risk", "1", &model).await;
    let worker = fleet.worker("w-1", 16 << 20, "1s").await;
    worker.score("acme.risk", &[0.5; 8], 1).await;
    assert_eq!(worker.index().await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        worker.index().await.is_empty(),
        "evicted after idling past the TTL"
    );
    assert_eq!(
        worker
            .metric("shardline_worker_evictions_total{reason=\"idle\"}")
            .await,
        1.0
    );
    // And it comes back on the next request.
    let got = worker.score("acme.risk", &[0.5; 8], 1).await;
    assert_close(&got, &model.reference(&[0.5; 8], 1));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_artifact_is_refused_every_time_and_others_keep_serving() {
    let fleet = support::fleet().await;
    let good = MlpArtifact::random(&[8, 4, 1], 4);
    let bad = MlpArtifact::random(&[8, 4, 1], 5);
    fleet.publish_model("acme", "good", "1", &good).await;
    let manifest = fleet.publish_model("acme", "bad", "1", &bad).await;
    // The weights change after registration (same size, different bytes).
    let mut tampered = bad.weights.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    fleet
        .store
        .put(&manifest.object_path(WEIGHTS_FILE), Bytes::from(tampered))
        .await
        .unwrap();
    let worker = fleet.worker("w-1", 16 << 20, "10m").await;
    for attempt in 0..3 {
        let resp = worker
            .infer("acme.bad", r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#)
            .await;
        assert_eq!(resp.status(), 502, "attempt {attempt}");
        assert!(resp.headers().contains_key("retry-after"));
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("corrupt") && text.contains("sha256"),
            "{text}"
        );
        let got = worker.score("acme.good", &[0.1; 8], 1).await;
        assert_close(&got, &good.reference(&[0.1; 8], 1));
        // Past the negative-cache backoff, the next request tries again (and fails again).
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"corrupt\"}")
            .await
            >= 2.0
    );
    let index = worker.index().await;
    assert_eq!(index.len(), 1, "only the good model is resident: {index:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_resident_models_serving_and_cold_ones_get_503() {
    let mut fleet = support::fleet().await;
    let warm = MlpArtifact::random(&[8, 4, 1], 6);
    let cold = MlpArtifact::random(&[8, 4, 1], 7);
    fleet.publish_model("acme", "warm", "1", &warm).await;
    fleet.publish_model("acme", "cold", "1", &cold).await;
    let worker = fleet.worker("w-1", 16 << 20, "10m").await;
    worker.score("acme.warm", &[0.2; 8], 1).await;

    fleet.s3().pause().unwrap();
    let got = worker.score("acme.warm", &[0.3; 8], 1).await;
    assert_close(&got, &warm.reference(&[0.3; 8], 1));
    let resp = worker
        .infer("acme.cold", r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[1,1,1,1,1,1,1,1]}]}"#)
        .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let text = resp.text().await.unwrap();
    assert!(text.contains("unavailable"), "{text}");

    fleet.s3().resume().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = worker.score("acme.cold", &[1.0; 8], 1).await;
    assert_close(&got, &cold.reference(&[1.0; 8], 1));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_answers() {
    let fleet = support::fleet().await;
    let model = MlpArtifact::random(&[4, 2, 1], 8);
    fleet.publish_model("acme", "risk", "1", &model).await;
    let worker = fleet.worker("w-1", 16 << 20, "10m").await;
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed json", "{\"inputs\": [".into(), 400),
        ("wrong shape", r#"{"inputs":[{"name":"features","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#.into(), 400),
        ("wrong dtype", r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"BYTES","data":["a","b","c","d"]}]}"#.into(), 400),
        ("rows x dim != data", r#"{"inputs":[{"name":"features","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.into(), 400),
        ("overflowing number", r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP64","data":[1e400,1,1,1]}]}"#.into(), 400),
        ("empty batch", r#"{"inputs":[{"name":"features","shape":[0,4],"datatype":"FP32","data":[]}]}"#.into(), 400),
        ("no inputs", r#"{"inputs":[]}"#.into(), 400),
    ];
    for (what, body, status) in cases {
        let resp = worker.infer("acme.risk", body).await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let v: serde_json::Value = resp.json().await.unwrap();
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(|c: char| c.is_ascii_lowercase()),
            "{what}: {v}"
        );
    }
    // A 10 MB body is refused from its announced length, before it is read.
    let (status, body) = shardline_testkit::post_head_only(
        &worker.addr.to_string(),
        "/v2/models/acme.risk/infer",
        &[("x-shardline-token", TOKEN)],
        10 << 20,
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("larger than"), "{body}");
    // None of those loaded the model.
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        0.0
    );
    let unknown = worker.infer("acme.nope", "{}").await;
    assert_eq!(unknown.status(), 404);
    let no_token = worker
        .http
        .post(worker.endpoint("/v2/models/acme.risk/infer"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let meta: serde_json::Value = worker
        .http
        .get(worker.endpoint("/v2/models/acme.risk"))
        .header("x-shardline-token", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 4]));
    assert_eq!(meta["versions"], serde_json::json!(["1"]));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_load_prefetches_and_unload_drops() {
    let fleet = support::fleet().await;
    let v1 = MlpArtifact::random(&[8, 4, 1], 9);
    let v2 = MlpArtifact::random(&[8, 4, 1], 10);
    fleet.publish_model("acme", "risk", "1", &v1).await;
    fleet.publish_model("acme", "risk", "2", &v2).await;
    let worker = fleet.worker("w-1", 16 << 20, "10m").await;
    let post = |path: String, body: &'static str| {
        worker
            .http
            .post(worker.endpoint(&path))
            .header("x-shardline-token", TOKEN)
            .body(body)
            .send()
    };
    let ready = |path: &'static str| {
        worker
            .http
            .get(worker.endpoint(path))
            .header("x-shardline-token", TOKEN)
            .send()
    };
    assert_eq!(
        ready("/v2/models/acme.risk/versions/1/ready")
            .await
            .unwrap()
            .status(),
        503
    );
    let r = post(
        "/v2/repository/models/acme.risk/load".into(),
        r#"{"parameters":{"version":"1"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ready("/v2/models/acme.risk/versions/1/ready")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        ready("/v2/models/acme.risk/ready").await.unwrap().status(),
        503,
        "v2 is live and cold"
    );
    let index = worker.index().await;
    assert_eq!((index.len(), index[0]["version"].as_str()), (1, Some("1")));
    assert_eq!(index[0]["name"], "acme.risk");
    // Scoring v1 explicitly is warm: no further load.
    let resp = worker
        .http
        .post(worker.endpoint("/v2/models/acme.risk/versions/1/infer"))
        .header("x-shardline-token", TOKEN)
        .body(r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        1.0
    );
    let r = post(
        "/v2/repository/models/acme.risk/unload".into(),
        r#"{"parameters":{"version":"1"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(worker.index().await.is_empty());
    assert_eq!(
        worker
            .metric("shardline_worker_evictions_total{reason=\"explicit\"}")
            .await,
        1.0
    );
    let missing = post("/v2/repository/models/acme.nope/load".into(), "")
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_model_in_flight_limit_answers_429() {
    let mut fleet = support::fleet().await;
    let slow = MlpArtifact::random(&[8, 4, 1], 11);
    let other = MlpArtifact::random(&[8, 4, 1], 12);
    fleet.publish_model("acme", "slow", "1", &slow).await;
    fleet.publish_model("acme", "other", "1", &other).await;
    let worker = fleet.worker_with("w-1", 16 << 20, "10m", 1).await;
    let body = r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#;
    // With the store paused, the first request holds its model's only slot while loading.
    fleet.s3().pause().unwrap();
    let first = {
        let http = worker.http.clone();
        let url = worker.endpoint("/v2/models/acme.slow/infer");
        tokio::spawn(async move {
            http.post(url)
                .header("x-shardline-token", TOKEN)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the first request holds the slot.
    eventually(
        "the first request holds the slot",
        Duration::from_secs(2),
        || async { worker.metric("shardline_worker_in_flight").await >= 1.0 },
    )
    .await;
    assert_eq!(worker.metric("shardline_worker_in_flight").await, 1.0);
    let second = worker.infer("acme.slow", body).await;
    assert_eq!(second.status(), 429);
    let msg: serde_json::Value = second.json().await.unwrap();
    assert!(
        msg["error"].as_str().unwrap().contains("in flight"),
        "{msg}"
    );
    assert_eq!(
        first.await.unwrap(),
        503,
        "the held request fails with the store"
    );
    fleet.s3().resume().unwrap();
    // The slot was released; another model was never limited.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    worker.score("acme.slow", &[0.5; 8], 1).await;
    worker.score("acme.other", &[0.5; 8], 1).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_larger_than_the_whole_budget_gets_507() {
    let fleet = support::fleet().await;
    // ~2 MB of weights; loading needs the file and the built copy: twice that.
    let big = MlpArtifact::random(&[64, 8192, 1], 13);
    let small = MlpArtifact::random(&[8, 4, 1], 14);
    fleet.publish_model("acme", "big", "1", &big).await;
    fleet.publish_model("acme", "small", "1", &small).await;
    let worker = fleet.worker("w-1", 3 << 20, "10m").await;
    let input = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64]}]});
    let resp = worker.infer("acme.big", input.to_string()).await;
    assert_eq!(resp.status(), 507);
    let text = resp.text().await.unwrap();
    assert!(text.contains("budget"), "{text}");
    worker.score("acme.small", &[0.5; 8], 1).await;
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        1.0,
        "the oversized model was refused before any fetch"
    );
    worker.stop().await;
}

/// Token rotation: a worker given `--internal-token old,new` accepts either (each with
/// its own metadata request), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_internal_token_is_accepted_and_no_other() {
    let fleet = support::fleet().await;
    fleet
        .publish_model("acme", "risk", "1", &MlpArtifact::random(&[4, 3, 1], 3))
        .await;
    const NEW: &str = "rotated-token-0123456789abcdef";
    let spec = fleet
        .worker_spec("w-rot")
        .set("--internal-token", format!("{TOKEN},{NEW}"));
    let worker = fleet.start_node(spec).await;
    let status = |token: &'static str| {
        let worker = &worker;
        async move {
            worker
                .http
                .get(worker.endpoint("/v2/models/acme.risk"))
                .header("x-shardline-token", token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(TOKEN).await, 200);
    assert_eq!(status(NEW).await, 200);
    assert_eq!(status("some-other-token-0123456789").await, 401);
    assert_eq!(status("").await, 401);
    // A comma list with a short token is refused at start-up.
    let short = fleet
        .worker_spec("w-short")
        .set("--internal-token", format!("{TOKEN},short"));
    assert!(short.spawn(None).await.is_err());
    worker.stop().await;
}
