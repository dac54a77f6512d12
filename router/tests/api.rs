//! The router's public API against a real fleet (etcd, store, worker and router
//! processes): same scores as the worker, every endpoint, every refusal, tenant
//! isolation, key rotation, and the retry budget when a whole shard answers 503.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use shardline_shared::ids::ModelKey;
use shardline_testkit::fleet::{TestFleet, infer_body, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_match_the_worker_and_every_endpoint_answers() {
    let fleet = TestFleet::builder().workers(2).start().await;
    let key = fleet.placed_model("acme", "risk", 2, 11).await;
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();

    let batch = rows(5, 3);
    let via_router = fleet.infer(0, &key, "risk", &batch).await;
    assert_eq!(via_router.status, 200, "{:?}", via_router.body);
    let direct = fleet.infer_direct(0, "acme", "risk", &batch).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    assert_eq!(via_router.scores(), direct.scores());
    assert_eq!(via_router.scores().len(), 5);
    assert_eq!(via_router.body["model_name"], "risk");
    assert_eq!(via_router.body["model_version"], "1");
    assert_eq!(via_router.body["id"], "req-1");
    assert_eq!(via_router.body["outputs"][0]["shape"], json!([5, 1]));
    let answered_by = via_router.worker.clone().unwrap();
    assert!(fleet.workers.iter().any(|w| w.id == answered_by));

    // A second version; the versioned path pins it while the live one stays.
    fleet.publish("acme", "risk", "2", 99).await;
    fleet
        .cp
        .set_live(&model, &"1".parse().unwrap())
        .await
        .unwrap();
    let url = &fleet.routers[0].url;
    let v2 = shardline_testkit::fleet::Reply::read(
        fleet
            .http
            .post(format!("{url}/v2/models/risk/versions/2/infer"))
            .bearer_auth(&key)
            .json(&infer_body(&batch))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v2.status, 200, "{:?}", v2.body);
    assert_eq!(v2.body["model_version"], "2");
    assert_ne!(
        v2.scores(),
        via_router.scores(),
        "version 2 has other weights"
    );

    let get = |path: String| {
        let req = fleet.http.get(format!("{url}{path}")).bearer_auth(&key);
        async move { shardline_testkit::fleet::Reply::read(req.send().await.unwrap()).await }
    };
    let meta = get("/v2/models/risk".into()).await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.body["name"], "risk");
    assert_eq!(meta.body["versions"], json!(["1", "2"]));
    assert_eq!(meta.body["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(meta.body["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta.body["outputs"][0]["shape"], json!([-1, 1]));
    assert_eq!(get("/v2/models/risk/versions/2".into()).await.status, 200);
    assert_eq!(get("/v2/models/risk/ready".into()).await.status, 200);
    assert_eq!(
        get("/v2/models/risk/versions/1/ready".into()).await.status,
        200
    );
    assert_eq!(
        get("/v2/models/risk/versions/7/ready".into()).await.status,
        404
    );
    assert_eq!(get("/v2/health/live".into()).await.status, 200);
    assert_eq!(get("/v2/health/ready".into()).await.status, 200);
    let server = get("/v2".into()).await;
    assert_eq!(server.body["name"], "shardline");

    // Refusals, each with a lowercase JSON error.
    let post = |path: &str, body: Vec<u8>| {
        fleet
            .http
            .post(format!("{url}{path}"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("malformed json", post("/v2/models/risk/infer", b"{\"inputs\":[".to_vec()), 400),
        (
            "wrong shape",
            post(
                "/v2/models/risk/infer",
                serde_json::to_vec(&json!({"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})).unwrap(),
            ),
            400,
        ),
        (
            "bytes dtype",
            post(
                "/v2/models/risk/infer",
                serde_json::to_vec(&json!({"inputs":[{"name":"features","shape":[1,64],"datatype":"BYTES","data":["a"]}]})).unwrap(),
            ),
            400,
        ),
        ("unknown model", post("/v2/models/nope/infer", serde_json::to_vec(&infer_body(&batch)).unwrap()), 404),
        ("unknown version", post("/v2/models/risk/versions/9/infer", serde_json::to_vec(&infer_body(&batch)).unwrap()), 404),
        ("invalid model name", post("/v2/models/Bad%20Name/infer", serde_json::to_vec(&infer_body(&batch)).unwrap()), 404),
        (
            "bad deadline header",
            post("/v2/models/risk/infer", serde_json::to_vec(&infer_body(&batch)).unwrap())
                .header("x-shardline-deadline-ms", "soon"),
            400,
        ),
        ("unknown endpoint", post("/v2/elsewhere", vec![]), 404),
    ];
    for (what, req, want) in cases {
        let reply = shardline_testkit::fleet::Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, want, "{what}: {:?}", reply.body);
        let msg = reply.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {:?}", reply.body));
        // Our wording is lowercase; quoted details (serde's "EOF") are kept as they are.
        assert!(
            msg.starts_with(|c: char| c.is_ascii_lowercase()),
            "{what}: {msg}"
        );
        assert!(!msg.ends_with('.'), "{what}: {msg}");
    }
    let bearer = format!("Bearer {key}");
    let (status, body) = shardline_testkit::post_head_only(
        url.trim_start_matches("http://"),
        "/v2/models/risk/infer",
        &[("authorization", &bearer)],
        9 << 20,
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("larger than"), "{body}");
    // Refused requests never reached a worker: one upstream attempt per scored request.
    let upstream = fleet
        .router_metric(0, "shardline_router_upstream_requests_total")
        .await;
    assert_eq!(upstream, 2.0);
    let counted = fleet
        .router_metric(0, "shardline_router_requests_total")
        .await;
    assert_eq!(
        counted,
        2.0 + 8.0,
        "every infer answer is counted (the fallback 404 is not an infer)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_a_rotated_key_stops_working() {
    let fleet = TestFleet::builder().workers(2).start().await;
    let key_a = fleet.tenant("alpha", Some(1)).await;
    let key_b = fleet.tenant("bravo", Some(1)).await;
    fleet.publish("alpha", "risk", "1", 1).await;
    fleet.publish("bravo", "risk", "1", 2).await;
    fleet.publish("bravo", "secret", "1", 3).await;
    let url = fleet.routers[0].url.clone();
    let batch = rows(1, 0);

    // Same model name, each tenant gets its own model.
    let a = fleet.infer(0, &key_a, "risk", &batch).await;
    let b = fleet.infer(0, &key_b, "risk", &batch).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.scores(), b.scores());

    // Another tenant's model looks exactly like a missing one, on every endpoint.
    let endpoints = |m: &str| {
        vec![
            ("GET", format!("/v2/models/{m}")),
            ("GET", format!("/v2/models/{m}/versions/1")),
            ("GET", format!("/v2/models/{m}/ready")),
            ("GET", format!("/v2/models/{m}/versions/1/ready")),
            ("POST", format!("/v2/models/{m}/infer")),
            ("POST", format!("/v2/models/{m}/versions/1/infer")),
        ]
    };
    let call = |method: &str, path: &str, key: &str| {
        let req = if method == "GET" {
            fleet.http.get(format!("{url}{path}"))
        } else {
            fleet
                .http
                .post(format!("{url}{path}"))
                .json(&infer_body(&batch))
        };
        let req = req.bearer_auth(key);
        async move { shardline_testkit::fleet::Reply::read(req.send().await.unwrap()).await }
    };
    for ((method, theirs), (_, missing)) in endpoints("secret").iter().zip(endpoints("absent")) {
        let r1 = call(method, theirs, &key_a).await;
        let r2 = call(method, &missing, &key_a).await;
        assert_eq!(r1.status, 404, "{method} {theirs}: {:?}", r1.body);
        assert_eq!(r1.status, r2.status);
        assert_eq!(
            r1.body["error"]
                .as_str()
                .unwrap()
                .replace("secret", "absent"),
            r2.body["error"].as_str().unwrap(),
            "{method} {theirs}: the refusal must not reveal that the model exists"
        );
        // Its owner sees it.
        assert!(call(method, theirs, &key_b).await.status < 300);
        // Bad and missing keys: 401 everywhere.
        assert_eq!(call(method, theirs, "sl_0000").await.status, 401);
        let anonymous = if *method == "GET" {
            fleet.http.get(format!("{url}{theirs}"))
        } else {
            fleet
                .http
                .post(format!("{url}{theirs}"))
                .json(&infer_body(&batch))
        };
        assert_eq!(anonymous.send().await.unwrap().status(), 401);
    }

    // Rotation: the old key stops working within a second of the write.
    let new_key = fleet
        .cp
        .rotate_key(&"alpha".parse().unwrap())
        .await
        .unwrap();
    let rotated = Instant::now();
    loop {
        let status = fleet.infer(0, &key_a, "risk", &batch).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            rotated.elapsed() < Duration::from_secs(1),
            "old key still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fleet
            .infer(0, new_key.expose(), "risk", &batch)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_gets_429_while_others_are_served() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let limits = shardline_shared::records::TenantLimits {
        max_in_flight: 0,
        rate_per_sec: 2,
    };
    let noisy = fleet.tenant_with("noisy", Some(1), limits).await;
    let quiet = fleet.tenant("quiet", Some(1)).await;
    fleet.publish("noisy", "risk", "1", 1).await;
    fleet.publish("quiet", "risk", "1", 2).await;
    let batch = rows(1, 0);
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(fleet.infer(0, &noisy, "risk", &batch).await);
    }
    let limited: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "6 requests at once exceed 2/s");
    assert!(limited[0].retry_after.is_some());
    assert!(statuses.iter().all(|r| r.status == 200 || r.status == 429));
    assert_eq!(fleet.infer(0, &quiet, "risk", &batch).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_a_whole_shard_answers_503() {
    let mut fleet = TestFleet::builder()
        .workers(2)
        .s3()
        .router_arg("--retry-budget-percent=20")
        .router_arg("--retry-min-per-sec=1")
        .router_arg("--retry-window=10s")
        .start()
        .await;
    let key = fleet.placed_model("acme", "risk", 2, 5).await;
    // The object store goes away before the model was ever loaded: both members
    // answer 503 (store unreachable) to every request.
    fleet.s3.as_mut().unwrap().kill().await.unwrap();

    let batch = rows(1, 0);
    let requests = 120;
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let (http, url) = (fleet.http.clone(), fleet.routers[0].url.clone());
    for _ in 0..requests {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let req = http
            .post(format!("{url}/v2/models/risk/infer"))
            .bearer_auth(&key)
            .json(&infer_body(&batch));
        tasks.spawn(async move {
            let reply = shardline_testkit::fleet::Reply::read(req.send().await.unwrap()).await;
            drop(permit);
            reply
        });
    }
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert!(reply.retry_after.is_some());
    }
    let upstream = fleet
        .router_metric(0, "shardline_router_upstream_requests_total")
        .await;
    let retries = fleet
        .router_metric(0, "shardline_router_retries_total")
        .await;
    let refused = fleet
        .router_metric(0, "shardline_router_retries_refused_total")
        .await;
    // Budget: 20 % of the requests plus 1/s over the 10 s window.
    let budget = 0.2 * requests as f64 + 10.0;
    assert!(retries >= 1.0, "failover was tried");
    assert!(retries <= budget, "{retries} retries > budget {budget}");
    assert!(refused >= 1.0, "the budget refused retries");
    assert_eq!(upstream, requests as f64 + retries);
}
