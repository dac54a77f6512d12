//! The gRPC front door against a real fleet (etcd, store, worker and router processes):
//! `tritonclient.grpc` scores a 64-row batch with raw FP32 and FP64 inputs bit for bit
//! as the worker's JSON answer, and reads health and metadata (the same as over HTTP);
//! typed contents, `grpc.health.v1`, UNIMPLEMENTED for what is not served; every
//! refusal with its code and the HTTP path's message — bad key, another tenant's model,
//! wrong shape, raw contents of the wrong length, non-finite values, too many rows,
//! `grpc-timeout` exceeded, a tenant over its limit; and a model's canary and shadow
//! apply to gRPC requests as to HTTP ones.
#![allow(clippy::unwrap_used)]

#[path = "support/grpc.rs"]
mod client;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{call, channel, python};
use serde_json::{Value, json};
use shardline_router::grpc::health_pb::{HealthCheckRequest, HealthCheckResponse};
use shardline_router::grpc::pb::model_infer_request::InferInputTensor;
use shardline_router::grpc::pb::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ServerLiveRequest,
    ServerLiveResponse,
};
use shardline_testkit::fleet::{DIM, TestFleet, infer_body};
use shardline_testkit::models::mlp::{INPUT_NAME, OUTPUT_NAME};
use tonic::Code;

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const MAX_ROWS: usize = 100;

/// A fleet of one worker and one router serving gRPC on a free port (at most
/// [`MAX_ROWS`] rows per request).
async fn fleet() -> (TestFleet, std::net::SocketAddr) {
    let grpc = std::net::SocketAddr::from(([127, 0, 0, 1], shardline_testkit::free_port()));
    let fleet = TestFleet::builder()
        .workers(1)
        .router_arg(&format!("--grpc-listen={grpc}"))
        .router_arg(&format!("--max-batch-rows={MAX_ROWS}"))
        .start()
        .await;
    (fleet, grpc)
}

/// `n` rows of full-precision values in [-3, 3) (every mantissa bit in use).
fn rows(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 * 6.0 - 3.0
    };
    (0..n).map(|_| (0..DIM).map(|_| next()).collect()).collect()
}

fn narrow(rows: &[Vec<f64>]) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|r| r.iter().map(|&x| x as f32).collect())
        .collect()
}

/// The worker's own JSON answer for `rows`, as f32 bit patterns.
async fn worker_bits(fleet: &TestFleet, rows: &[Vec<f32>]) -> Vec<u32> {
    let reply = fleet.infer_direct(0, "acme", "risk", rows).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply
        .scores()
        .iter()
        .map(|&s| (s as f32).to_bits())
        .collect()
}

/// A raw FP32 request of `rows`.
fn raw_request(rows: &[Vec<f32>], shape: Vec<i64>) -> ModelInferRequest {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: "risk".into(),
        inputs: vec![InferInputTensor {
            name: INPUT_NAME.into(),
            datatype: "FP32".into(),
            shape,
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![Bytes::from(bytes)],
        ..ModelInferRequest::default()
    }
}

/// The router's HTTP refusal of the same batch as JSON with `shape`: its message.
async fn http_refusal(fleet: &TestFleet, key: &str, rows: &[Vec<f32>], shape: Value) -> String {
    let mut body = infer_body(rows);
    body["inputs"][0]["shape"] = shape;
    let reply = fleet
        .http
        .post(format!("{}/v2/models/risk/infer", fleet.routers[0].url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    reply.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_scores_bit_for_bit_and_reads_health_and_metadata() {
    let (fleet, grpc) = fleet().await;
    let key = fleet.placed_model("acme", "risk", 1, 11).await;
    fleet.placed_model("bravo", "secret", 1, 12).await;
    let wide = rows(64, 7);
    let fp32 = narrow(&rows(64, 8));
    let expected_fp32 = worker_bits(&fleet, &fp32).await;
    // FP64 is rounded to nearest f32 by the router, as the worker rounds a JSON number.
    let expected_fp64 = worker_bits(&fleet, &narrow(&wide)).await;

    let plan = json!({
        "url": grpc.to_string(), "key": key, "model": "risk", "other_model": "secret",
        "input": INPUT_NAME, "output": OUTPUT_NAME, "rows": 64, "dim": DIM,
        "fp32_bits": fp32.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "fp64_bits": wide.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>(),
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/tritonclient_grpc.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    let bits = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(bits(&got["fp32"]), expected_fp32, "FP32 scores over gRPC");
    assert_eq!(bits(&got["fp64"]), expected_fp64, "FP64 scores over gRPC");
    assert_eq!(expected_fp32.len(), 64);
    assert_eq!(
        (&got["live"], &got["ready"], &got["model_ready"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(got["server"]["name"], "shardline");
    // Server metadata: what `GET /v2` says.
    let v2 = get_json(&fleet, "/v2", &key).await;
    assert_eq!(got["server"]["extensions"], v2["extensions"]);
    assert_eq!(got["server"]["version"], v2["version"]);

    // Model metadata: what HTTP says, field for field.
    let http = get_json(&fleet, "/v2/models/risk", &key).await;
    for field in ["name", "versions", "platform", "inputs", "outputs"] {
        assert_eq!(got["metadata"][field], http[field], "metadata {field}");
    }

    let refusal = |case: &str| -> (String, String) {
        let r = &got["refusals"][case];
        assert!(r.is_array(), "{case} was not refused: {got}");
        (
            r[0].as_str().unwrap().to_owned(),
            r[1].as_str().unwrap().to_owned(),
        )
    };
    let unauthorized = (
        "StatusCode.UNAUTHENTICATED".to_owned(),
        "missing or invalid api key".to_owned(),
    );
    assert_eq!(refusal("bad_key"), unauthorized);
    assert_eq!(refusal("no_key"), unauthorized);
    assert_eq!(refusal("model_metadata_bad_key"), unauthorized);
    assert_eq!(
        refusal("other_tenant"),
        (
            "StatusCode.NOT_FOUND".to_owned(),
            "model \"secret\" not found".to_owned()
        )
    );
    let narrow_rows: Vec<Vec<f32>> = fp32.iter().map(|r| r[..DIM - 1].to_vec()).collect();
    let shape = http_refusal(&fleet, &key, &narrow_rows, json!([64, DIM - 1])).await;
    assert_eq!(
        refusal("wrong_shape"),
        ("StatusCode.INVALID_ARGUMENT".to_owned(), shape)
    );
    assert_eq!(
        refusal("non_finite"),
        (
            "StatusCode.INVALID_ARGUMENT".to_owned(),
            "input value NaN at position 3 is not finite for datatype FP32".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_health_answers() {
    let (mut fleet, grpc) = fleet().await;
    let key = fleet.placed_model("acme", "risk", 1, 11).await;
    let limits = shardline_shared::records::TenantLimits {
        max_in_flight: 0,
        rate_per_sec: 1,
    };
    let tight = fleet.tenant_with("tight", Some(1), limits).await;
    fleet.publish("tight", "risk", "1", 3).await;
    let ch = channel(grpc).await;
    let batch = narrow(&rows(3, 1));
    let shape = vec![3, DIM as i64];
    let infer = |request: ModelInferRequest, key: Option<&str>, timeout: Option<Duration>| {
        let (ch, key) = (ch.clone(), key.map(str::to_owned));
        async move { call::<_, ModelInferResponse>(&ch, INFER, request, key.as_deref(), timeout).await }
    };

    // Typed contents are answered with typed contents, the same scores.
    let mut typed = raw_request(&batch, shape.clone());
    typed.raw_input_contents.clear();
    typed.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: batch.iter().flatten().copied().collect(),
        ..InferTensorContents::default()
    });
    typed.id = "req-9".into();
    let answer = infer(typed.clone(), Some(&key), None).await.unwrap();
    assert!(answer.metadata().get("x-shardline-worker").is_some());
    let answer = answer.into_inner();
    assert!(answer.raw_output_contents.is_empty());
    assert_eq!(
        (answer.id.as_str(), answer.model_version.as_str()),
        ("req-9", "1")
    );
    let scores = &answer.outputs[0].contents.as_ref().unwrap().fp32_contents;
    let got: Vec<u32> = scores.iter().map(|s| s.to_bits()).collect();
    assert_eq!(got, worker_bits(&fleet, &batch).await);

    let code = |r: Result<tonic::Response<ModelInferResponse>, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_owned())
    };
    let ok = raw_request(&batch, shape.clone());
    assert_eq!(
        code(infer(ok.clone(), None, None).await).0,
        Code::Unauthenticated
    );
    assert_eq!(
        code(infer(ok.clone(), Some("wrong"), None).await).0,
        Code::Unauthenticated
    );
    let mut short = ok.clone();
    short.raw_input_contents[0] = short.raw_input_contents[0].slice(1..);
    let (c, m) = code(infer(short, Some(&key), None).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(
        m.starts_with("raw_input_contents[0] has 767 bytes but shape [3, 64]"),
        "{m}"
    );
    let mut inf = typed.clone();
    inf.inputs[0].contents.as_mut().unwrap().fp32_contents[70] = f32::INFINITY;
    let (c, m) = code(infer(inf, Some(&key), None).await);
    assert_eq!(
        (c, m.as_str()),
        (
            Code::InvalidArgument,
            "input value inf at position 70 is not finite for datatype FP32"
        )
    );
    let many = narrow(&rows(MAX_ROWS + 1, 2));
    let (c, m) = code(
        infer(
            raw_request(&many, vec![many.len() as i64, DIM as i64]),
            Some(&key),
            None,
        )
        .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert_eq!(
        m,
        http_refusal(&fleet, &key, &many, json!([many.len(), DIM])).await
    );
    let mut missing = ok.clone();
    missing.model_name = "nope".into();
    assert_eq!(
        code(infer(missing, Some(&key), None).await),
        (Code::NotFound, "model \"nope\" not found".into())
    );

    // Over its rate: RESOURCE_EXHAUSTED with the HTTP message and retry-after.
    let mut limited = None;
    for _ in 0..4 {
        if let Err(s) = infer(ok.clone(), Some(&tight), None).await {
            limited = Some(s);
            break;
        }
    }
    let limited = limited.expect("4 requests at once exceed 1/s");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(
        limited.message(),
        "tenant is over its limit of 1 requests per second"
    );
    assert!(limited.metadata().get("retry-after").is_some());

    // grpc-timeout is the deadline: a worker that does not answer (stopped) costs the
    // client its timeout, answered by the router itself (this client enforces nothing).
    fleet.workers[0].process_mut().unwrap().pause().unwrap();
    let started = Instant::now();
    let (c, m) = code(infer(ok.clone(), Some(&key), Some(Duration::from_millis(400))).await);
    let took = started.elapsed();
    fleet.workers[0].process_mut().unwrap().resume().unwrap();
    assert_eq!(
        (c, m.as_str()),
        (Code::DeadlineExceeded, "deadline of 400ms exceeded")
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    shardline_testkit::eventually!(Duration::from_secs(10), "scoring again", {
        infer(ok.clone(), Some(&key), None).await.is_ok()
    });

    // Health, liveness, and what is not served.
    let health = |service: &str| {
        let (ch, service) = (ch.clone(), service.to_owned());
        async move {
            call::<_, HealthCheckResponse>(
                &ch,
                "/grpc.health.v1.Health/Check",
                HealthCheckRequest { service },
                None,
                None,
            )
            .await
        }
    };
    assert_eq!(health("").await.unwrap().into_inner().status, 1, "SERVING");
    assert_eq!(
        health("inference.GRPCInferenceService")
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );
    assert_eq!(health("other").await.unwrap_err().code(), Code::NotFound);
    let live = call::<_, ServerLiveResponse>(
        &ch,
        "/inference.GRPCInferenceService/ServerLive",
        ServerLiveRequest {},
        None,
        None,
    )
    .await;
    assert!(live.unwrap().into_inner().live);
    let stream = call::<_, ServerLiveResponse>(
        &ch,
        "/inference.GRPCInferenceService/RepositoryIndex",
        ServerLiveRequest {},
        None,
        None,
    )
    .await;
    assert_eq!(stream.unwrap_err().code(), Code::Unimplemented);
}

/// The router's JSON answer to `GET path` with `key`.
async fn get_json(fleet: &TestFleet, path: &str, key: &str) -> Value {
    let url = format!("{}{path}", fleet.routers[0].url);
    let reply = fleet.http.get(url).bearer_auth(key).send().await.unwrap();
    reply.json().await.unwrap()
}

/// A request naming no version over gRPC gets the canary's share (the answer names the
/// version that served) and is copied to the shadow like one over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_and_shadow_apply_over_grpc() {
    use shardline_shared::ids::{ModelKey, VersionId};
    use shardline_shared::rollout::{Canary, FULL, Shadow};

    let (fleet, grpc) = fleet().await;
    let key = fleet.placed_model("acme", "risk", 1, 11).await;
    fleet.publish("acme", "risk", "2", 12).await;
    fleet.publish("acme", "risk", "3", 13).await;
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();
    let v = |s: &str| VersionId::new(s).unwrap();
    fleet.cp.set_live(&model, &v("1")).await.unwrap();
    let canary = Canary {
        version: v("2"),
        basis_points: FULL,
        sticky: false,
    };
    fleet.cp.set_canary(&model, Some(canary)).await.unwrap();
    let shadow = Shadow {
        version: v("3"),
        basis_points: FULL,
    };
    fleet.cp.set_shadow(&model, Some(shadow)).await.unwrap();
    let ch = channel(grpc).await;
    let batch = narrow(&rows(2, 5));
    let served = || async {
        let request = raw_request(&batch, vec![2, DIM as i64]);
        let answer = call::<_, ModelInferResponse>(&ch, INFER, request, Some(&key), None)
            .await
            .unwrap();
        answer.into_inner().model_version
    };
    shardline_testkit::wait::eventually("the canary serves", Duration::from_secs(10), || async {
        let version = served().await;
        if version == "2" { Ok(()) } else { Err(version) }
    })
    .await;
    for _ in 0..20 {
        assert_eq!(served().await, "2");
    }
    shardline_testkit::wait::eventually("shadow comparisons", Duration::from_secs(10), || async {
        let text = fleet.routers[0].metrics_text().await;
        let n = shardline_testkit::metric_sum(
            &text,
            "shardline_router_shadow_requests_total",
            Some(("result", "compared")),
        );
        if n >= 20.0 { Ok(()) } else { Err(n) }
    })
    .await;
}
