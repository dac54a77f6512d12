//! The test kit's one fleet builder starts routers either way — as processes, or the
//! router's own `serve()` in the test process on the same argument list — and both
//! route a scored request.
#![allow(clippy::unwrap_used)]

use clap::Parser;
use shardline_router::config::RouterArgs;
use shardline_testkit::fleet::{Launch, Launcher, TestFleet, rows};

/// Runs a router in this process on the binary's argument list.
fn launch_router() -> Launcher {
    Launcher::new(|start| async move {
        let args = RouterArgs::try_parse_from(&start.args)?;
        let config = args.validate().map_err(|e| anyhow::anyhow!(e.join("; ")))?;
        let metrics = Some(start.metrics_listener);
        shardline_router::serve::serve(config, start.listener, metrics, start.shutdown).await
    })
}

async fn scores_through_the_router(mut fleet: TestFleet) {
    let key = fleet.placed_model("acme", "risk", 2, 3).await;
    let reply = fleet.infer(0, &key, "risk", &rows(2, 1)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.scores().len(), 2);
    // A router started later joins the same way and routes too.
    let r = fleet.add_router().await;
    let reply = fleet.infer(r, &key, "risk", &rows(1, 2)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_and_in_process_routers_both_start_and_score() {
    let processes = TestFleet::builder().workers(2).routers(1).start().await;
    assert!(processes.routers[0].pid().is_some());
    scores_through_the_router(processes).await;

    let in_process = TestFleet::builder()
        .workers(2)
        .routers(1)
        .in_process(Launch {
            worker: None,
            router: Some(launch_router()),
        })
        .start()
        .await;
    assert!(in_process.routers[0].pid().is_none());
    assert!(in_process.workers[0].pid().is_some());
    scores_through_the_router(in_process).await;
}
