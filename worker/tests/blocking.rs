//! Bounded blocking work on a real `worker` process: with one forward pass running and
//! one waiting, further large requests are refused at once with 503 and `Retry-After`
//! (not queued behind the others), a model load asked for meanwhile is not refused, the
//! worker keeps answering health checks, and it scores normally once the burst is over.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use shardline_testkit::TOKEN;
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::wait::eventually;

/// Rows per request: a forward pass of the wide model takes a second or more.
const ROWS: usize = 4096;
const BURST: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_running_and_queued_forwards_requests_get_503_at_once() {
    let fleet = support::fleet().await;
    let wide = MlpArtifact::random(&[64, 2048, 2048, 1], 7);
    fleet.publish_model("acme", "wide", "1", &wide).await;
    fleet
        .publish_model("acme", "small", "1", &MlpArtifact::random(&[64, 16, 1], 8))
        .await;
    let spec = fleet
        .worker_spec("w-blocking")
        .set("--memory-budget", "1GiB")
        .set("--inference-memory", "8GiB")
        .set("--max-blocking", "1")
        .set("--max-blocking-queue", "1");
    let worker = spec
        .spawn(Some(env!("CARGO_BIN_EXE_worker").into()))
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, body: String| {
        http.post(worker.endpoint(path))
            .header("x-shardline-token", TOKEN)
            .body(body)
            .send()
    };
    let load = |name: &str| {
        post(
            &format!("/v2/repository/models/acme.{name}/load"),
            String::new(),
        )
    };
    assert_eq!(load("wide").await.unwrap().status(), 200);
    let body = serde_json::json!({"inputs": [{"name": "features", "shape": [ROWS, 64],
        "datatype": "FP32", "data": vec![0.25f32; ROWS * 64]}]})
    .to_string();

    // A burst of large requests at once.
    let started = Instant::now();
    let burst = (0..BURST).map(|_| {
        let send = post("/v2/models/acme.wide/infer", body.clone());
        async move {
            let answer = send.await.unwrap();
            let retry = answer.headers().contains_key("retry-after");
            (answer.status().as_u16(), retry, started.elapsed())
        }
    });
    let burst = tokio::spawn(futures::future::join_all(burst));
    // Meanwhile: a load is not refused, and health is answered.
    eventually(
        "the forward passes running and queued",
        Duration::from_secs(30),
        || async { worker.metric("shardline_worker_blocking_work").await >= 2.0 },
    )
    .await;
    let live = Instant::now();
    let health = http
        .get(worker.endpoint("/v2/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let live = live.elapsed();
    let loaded = load("small").await.unwrap();
    assert_eq!(loaded.status(), 200, "{}", loaded.text().await.unwrap());
    let answers = burst.await.unwrap();

    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let scored: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    eprintln!("answers {answers:?}; health in {live:?}");
    assert_eq!(refused.len() + scored.len(), BURST, "{answers:?}");
    assert!(scored.len() >= 2, "{answers:?}");
    assert!(refused.len() >= BURST / 2, "{answers:?}");
    let slowest_score = scored.iter().map(|a| a.2).max().unwrap();
    for (_, retry_after, took) in &refused {
        assert!(retry_after, "503 without Retry-After");
        assert!(
            *took < slowest_score,
            "a refusal took {took:?}, the slowest score {slowest_score:?}: it was queued"
        );
    }
    assert!(live < Duration::from_secs(1), "health took {live:?}");
    assert_eq!(
        worker
            .metric("shardline_worker_blocking_refused_total")
            .await,
        refused.len() as f64
    );
    // Nothing else broke: the work is over, and the worker scores.
    eventually("no blocking work left", Duration::from_secs(30), || async {
        worker.metric("shardline_worker_blocking_work").await == 0.0
    })
    .await;
    let again = post("/v2/models/acme.wide/infer", body).await.unwrap();
    assert_eq!(again.status(), 200);
    worker.score("acme.small", &[0.5; 64], 1).await;
}
