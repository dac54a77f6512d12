//! Workers run by the test kit's one fleet builder in the test process (the worker's
//! own `serve()`, on the binary's argument list) serve a real router process, as
//! worker processes do.
#![allow(clippy::unwrap_used)]

mod support;

use shardline_testkit::fleet::{Launch, TestFleet, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_workers_serve_a_router_process() {
    let mut fleet = TestFleet::builder()
        .workers(2)
        .routers(1)
        .s3()
        .in_process(Launch::workers(support::launch()))
        .start()
        .await;
    assert!(fleet.workers.iter().all(|w| w.pid().is_none()));
    assert!(fleet.routers[0].pid().is_some());
    let key = fleet.placed_model("acme", "risk", 2, 5).await;
    let via_router = fleet.infer(0, &key, "risk", &rows(3, 1)).await;
    assert_eq!(via_router.status, 200, "{:?}", via_router.body);
    let direct = fleet.infer_direct(0, "acme", "risk", &rows(3, 1)).await;
    assert_eq!(direct.scores(), via_router.scores());
    // A worker that crashes is routed around; one added later joins.
    fleet.workers[0].kill().await.unwrap();
    fleet.add_worker().await;
    let again = fleet.infer(0, &key, "risk", &rows(3, 1)).await;
    assert_eq!(again.scores(), via_router.scores());
}
