//! The inference memory budget against a real worker (`serve()`, real etcd and S3): a
//! model with one wide layer scored with large batches is refused with a clear 413
//! before anything is allocated, smaller batches of the same model score, requests that
//! each fit but not all at once take turns, and the worker keeps serving throughout.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use shardline_testkit::models::MlpArtifact;

/// Input width and the one wide hidden layer: 65,541 values per row, 262 KB of
/// activations per row.
const DIMS: [usize; 3] = [4, 65_536, 1];

fn body(rows: usize) -> String {
    serde_json::json!({"inputs": [{"name": "features", "shape": [rows, 4], "datatype": "FP32",
                                   "data": vec![0.25f32; rows * 4]}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_bomb_gets_413_and_the_worker_keeps_serving() {
    let fleet = support::fleet().await;
    let wide = MlpArtifact::random(&DIMS, 21);
    let small = MlpArtifact::random(&[8, 4, 1], 22);
    fleet.publish_model("acme", "wide", "1", &wide).await;
    fleet.publish_model("acme", "small", "1", &small).await;
    let spec = fleet
        .worker_spec("w-1")
        .set("--memory-budget", (64u64 << 20).to_string())
        .set("--inference-memory", "8MiB");
    let worker = fleet.start_node(spec).await;

    // 64 rows need 16.8 MB of activations: more than the whole budget.
    let resp = worker.infer("acme.wide", body(64)).await;
    assert_eq!(resp.status(), 413);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("inference memory") && text.contains("fewer rows"),
        "{text}"
    );
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        0.0,
        "refused before the model was even loaded"
    );

    // 8 rows (2.1 MB) score, and their answer is the model's.
    let resp = worker.infer("acme.wide", body(8)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // Six requests of 24 rows (6.3 MB each) at once: one fits at a time, the others
    // wait for it, and all are answered.
    let answers =
        futures::future::join_all((0..6).map(|_| worker.infer("acme.wide", body(24)))).await;
    for resp in answers {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        worker
            .metric("shardline_worker_activation_refusals_total{reason=\"too_large\"}")
            .await,
        1.0
    );
    assert_eq!(
        worker.metric("shardline_worker_activation_bytes").await,
        0.0
    );
    worker.score("acme.small", &[0.5; 8], 1).await;
    worker.stop().await;
}
