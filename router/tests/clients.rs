//! Standard clients, unmodified, against real router and worker processes: NVIDIA's
//! `tritonclient.http` and KServe's Python SDK REST client (pinned in
//! `loadtest/requirements.txt`, run from the test venv by the scripts in `clients/`).
//! Health, readiness and metadata answer what they read (the JSON bodies checked on
//! the router and the worker here too); scores through the router
//! with binary and JSON tensors, FP32 and FP64 inputs and a batch of 64 equal the
//! worker's own JSON answer bit for bit.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::{Value, json};
use shardline_testkit::TOKEN;
use shardline_testkit::fleet::{TestFleet, rows};
use shardline_testkit::models::mlp::OUTPUT_NAME;
use shardline_testkit::python::run_python;

/// A fleet with `acme`'s model `risk` placed, the script's settings for a batch of 64
/// rows, and the worker's JSON answer for that batch as `f32` bit patterns.
async fn setup() -> (TestFleet, Value, Vec<u64>) {
    let fleet = TestFleet::builder().workers(1).start().await;
    let key = fleet.placed_model("acme", "risk", 1, 21).await;
    let batch = rows(64, 8);
    let direct = fleet.infer_direct(0, "acme", "risk", &batch).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    let expected = direct
        .scores()
        .iter()
        .map(|&x| u64::from((x as f32).to_bits()))
        .collect();
    let settings = json!({
        "url": fleet.routers[0].url,
        "key": key,
        "model": "risk",
        "output": OUTPUT_NAME,
        "rows": batch,
    });
    (fleet, settings, expected)
}

async fn run(script: &str, settings: Value) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    tokio::task::spawn_blocking(move || run_python(&path, &settings))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The bits a script reported for `label`, after checking the answer's shape and form.
fn bits(seen: &Value, label: &str, rows: u64, binary_answer: bool) -> Vec<u64> {
    let score = &seen["scores"][label];
    assert_eq!(score["shape"], json!([rows, 1]), "{label}: {score}");
    assert_eq!(score["binary_answer"], binary_answer, "{label}");
    score["bits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_scores_bit_for_bit_in_every_mode() {
    let (fleet, mut settings, expected) = setup().await;
    // tritonclient takes `host:port`.
    settings["url"] = json!(fleet.routers[0].url.trim_start_matches("http://"));
    let seen = run("triton_http.py", settings).await;

    assert_eq!(seen["live"], true);
    assert_eq!(seen["ready"], true);
    assert_eq!(seen["model_ready"], true);
    assert_eq!(seen["other_model_ready"], false);
    let meta = &seen["metadata"];
    assert_eq!(meta["name"], "risk");
    assert_eq!(meta["inputs"][0]["name"], "features");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(meta["outputs"][0]["name"], OUTPUT_NAME);
    let extensions = seen["server_metadata"]["extensions"].as_array().unwrap();
    assert!(extensions.contains(&json!("binary_tensor_data")));

    for (label, binary_answer) in [
        ("fp32_binary", true),
        ("fp32_json", false),
        ("fp32_binary_in_json_out", false),
        ("fp32_json_in_binary_out", true),
        ("fp32_binary_default_outputs", true),
        ("fp64_binary", true),
        ("fp64_json", false),
    ] {
        assert_eq!(bits(&seen, label, 64, binary_answer), expected, "{label}");
    }
    assert_eq!(bits(&seen, "one_row_binary", 1, true), expected[..1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_rest_client_checks_health_and_scores_json_and_binary() {
    let (_fleet, settings, expected) = setup().await;
    let seen = run("kserve_rest.py", settings).await;

    assert_eq!(seen["live"], true);
    assert_eq!(seen["ready"], true);
    assert_eq!(seen["model_ready"], true);
    assert_eq!(bits(&seen, "json", 64, false), expected);
    assert_eq!(bits(&seen, "binary", 64, true), expected);
    assert_eq!(bits(&seen, "binary_in_json_out", 64, false), expected);
}

/// What the clients read, checked from Rust on the router and on the worker alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metadata_answer_what_clients_read() {
    // Scored once, so resident on the worker (its readiness means resident).
    let (fleet, settings, _) = setup().await;
    let key = settings["key"].as_str().unwrap();
    for (base, is_worker) in [
        (&fleet.routers[0].url, false),
        (&fleet.workers[0].url, true),
    ] {
        let get = |path: &str| {
            let mut req = fleet.http.get(format!("{base}{path}"));
            req = if is_worker {
                req.header("x-shardline-token", TOKEN)
            } else {
                req.bearer_auth(key)
            };
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let json = resp.headers()["content-type"] == "application/json";
                (
                    status,
                    json,
                    resp.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        };
        assert_eq!(
            get("/v2/health/live").await,
            (200, true, json!({"live": true}))
        );
        assert_eq!(
            get("/v2/health/ready").await,
            (200, true, json!({"ready": true}))
        );
        let (model, name) = if is_worker {
            ("acme.risk", "acme.risk")
        } else {
            ("risk", "risk")
        };
        for path in [
            format!("/v2/models/{model}/ready"),
            format!("/v2/models/{model}/versions/1/ready"),
        ] {
            assert_eq!(
                get(&path).await,
                (200, true, json!({"name": name, "ready": true})),
                "{base}{path}"
            );
        }
        let (status, _, meta) = get("/v2").await;
        assert_eq!(status, 200);
        let extensions = meta["extensions"].as_array().unwrap();
        assert!(extensions.contains(&json!("binary_tensor_data")), "{meta}");
    }
}
