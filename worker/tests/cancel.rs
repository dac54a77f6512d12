//! Cancellation safety against a real `worker` process (real etcd and S3): clients that
//! give up while their cold model loads do not abandon the load. A storm of requests with
//! deadlines shorter than the load leaves exactly one load, the model resident, and the
//! reservation counted until the load ended — and the process's peak resident set (VmHWM
//! from /proc; a process of its own, so that the test's copy of the model is not counted)
//! within the memory budget × 1.1 + 64 MiB.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use shardline_testkit::TOKEN;
use shardline_testkit::hostile::Memory;
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::wait::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_mid_load_leave_one_load_and_a_resident_model() {
    let fleet = support::fleet().await;
    // ~160 MB of weights: fetching from the S3 server, checking and building take far
    // longer than the clients below wait.
    let dims = MlpArtifact::dims_for_size(16, 160.0);
    let big = MlpArtifact::random(&dims, 31);
    fleet.publish_model("acme", "big", "1", &big).await;
    let budget = 384u64 << 20;
    let spec = fleet
        .worker_spec("w-1")
        .set("--memory-budget", budget.to_string());
    let worker = spec
        .spawn(Some(env!("CARGO_BIN_EXE_worker").into()))
        .await
        .unwrap();
    let pid = worker.pid().unwrap();
    let body = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 16],
                                              "datatype": "FP32", "data": vec![0.5f32; 16]}]})
    .to_string();

    // 200 clients, each giving up after 5–40 ms (it drops the connection), well before
    // the load ends.
    let url = worker.endpoint("/v2/models/acme.big/infer");
    let client = reqwest::Client::new();
    let storm = (0..200u64).map(|i| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            client
                .post(url)
                .timeout(Duration::from_millis(5 + (i * 37) % 36))
                .header("x-shardline-token", TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let answers = futures::future::join_all(storm).await;
    let gave_up = answers.iter().filter(|a| a.is_err()).count();
    let answered = answers.len() - gave_up;
    // Under a loaded machine some clients start late and find the model loaded; what
    // matters is that the first ones, the leader of the load among them, gave up.
    assert!(
        gave_up >= 20,
        "the load was too fast to test anything: {answered} answered"
    );

    // The first load goes on without its clients and ends with the model resident.
    eventually("the model resident", Duration::from_secs(60), || async {
        worker.metric("shardline_worker_models_resident").await == 1.0
    })
    .await;
    // One load's memory at a time, and never past the budget by more than the allowance
    // for the process itself: a cancelled load still counted while it ran.
    let peak = Memory::of(pid).unwrap().peak;
    let limit = budget + budget / 10 + (64 << 20);
    eprintln!(
        "worker peak RSS {} MiB, limit {} MiB (budget {} MiB, model {} MiB)",
        peak >> 20,
        limit >> 20,
        budget >> 20,
        big.resident_bytes() >> 20
    );
    assert!(peak <= limit, "peak RSS {} MiB", peak >> 20);
    assert_eq!(
        worker
            .metric("shardline_worker_model_loads_total{result=\"ok\"}")
            .await,
        1.0,
        "exactly one load, however many clients gave up"
    );
    assert_eq!(
        worker
            .metric("shardline_worker_model_load_duration_seconds_count")
            .await,
        1.0,
        "no other load was started"
    );
    // Resident, so the next request is answered at once.
    worker.score("acme.big", &[0.5; 16], 1).await;
    worker.stop().await;
}
