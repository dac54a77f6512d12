//! A worker process on a control plane larger than the old 4 MiB gRPC message limit
//! (thousands of tenants with a dozen keys each, written straight into etcd in the
//! layout `shardctl` writes): it registers, becomes ready with all of it in its snapshot,
//! and scores one of those tenants' models.
#![allow(clippy::unwrap_used)]

use shardline_shared::ids::WorkerId;
use shardline_shared::keys::Key;
use shardline_shared::metrics::CONTROL_SNAPSHOT_REVISION;
use shardline_testkit::fleet::bulk::{GRPC_DEFAULT_LIMIT, write_tenants};
use shardline_testkit::fleet::{TestFleet, rows};

const TENANTS: usize = 4000;
const KEYS_EACH: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registers_and_becomes_ready_beyond_one_grpc_message() {
    let mut fleet = TestFleet::builder().workers(0).routers(0).start().await;
    let (tenants, bytes) = write_tenants(&fleet.cp, TENANTS, KEYS_EACH).await.unwrap();
    let chosen = &tenants[TENANTS / 2];
    fleet.publish(chosen.id.as_str(), "risk", "1", 3).await;
    assert!(bytes > GRPC_DEFAULT_LIMIT, "{bytes} bytes");
    let written = fleet.cp.store().position().await.unwrap().revision;

    fleet.add_worker().await;
    let w = &fleet.workers[0];
    let record = Key::Worker(WorkerId::new(&w.id).unwrap());
    let stored = fleet.cp.store().get(&fleet.cp.key(&record)).await.unwrap();
    assert!(stored.is_some(), "registered");
    assert!(w.metric(CONTROL_SNAPSHOT_REVISION).await >= written as f64);
    let reply = fleet
        .infer_direct(0, chosen.id.as_str(), "risk", &rows(2, 1))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}
