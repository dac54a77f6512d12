//! gRPC over TLS against real router and worker processes: `tritonclient.grpc` with
//! `ssl=True` and the test certificate as its root scores a batch through the router's
//! TLS gRPC listener (the same `--tls-cert`/`--tls-key` as HTTP), bit for bit as the
//! worker's JSON answer; a plaintext client of the same listener fails cleanly
//! (UNAVAILABLE, no answer) and the TLS client scores after it. The certificate is made
//! with `openssl` in a scratch directory.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::json;
use shardline_testkit::fleet::{TestFleet, rows};
use shardline_testkit::models::mlp::{INPUT_NAME, OUTPUT_NAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_scores_over_tls_and_plaintext_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key_file) =
        shardline_testkit::certs::self_signed(dir.path(), "server", "shardline-test").unwrap();
    let mut fleet = TestFleet::builder().workers(1).routers(0).start().await;
    fleet.add_router().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    fleet.routers.clear();
    let grpc = SocketAddr::from(([127, 0, 0, 1], shardline_testkit::free_port()));
    let spec = fleet
        .router_spec("r-grpc-tls")
        .set("--grpc-listen", grpc.to_string())
        .set("--tls-cert", crt.to_str().unwrap())
        .set("--tls-key", key_file.to_str().unwrap());
    let _router = fleet.start_node(spec).await;

    let batch = rows(4, 7);
    let direct = fleet.infer_direct(0, "acme", "risk", &batch).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    let want: Vec<u32> = direct
        .scores()
        .iter()
        .map(|&s| (s as f32).to_bits())
        .collect();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/triton_grpc_tls.py");
    let plan = json!({
        "url": grpc.to_string(), "ca": crt, "key": key, "model": "risk",
        "input": INPUT_NAME, "output": OUTPUT_NAME, "rows": batch,
    });
    let out =
        tokio::task::spawn_blocking(move || shardline_testkit::python::run_python(&script, &plan))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(out["live"], true, "{out}");
    assert_eq!(out["model_ready"], true, "{out}");
    let bits = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(bits(&out["bits"]), want, "{out}");
    assert_eq!(bits(&out["again"]), want, "{out}");
    let plaintext = &out["plaintext"];
    assert_eq!(plaintext[0], "StatusCode.UNAVAILABLE", "{out}");
}
