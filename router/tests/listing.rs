//! A router process on a control plane larger than the old 4 MiB gRPC message limit
//! (thousands of tenants with a dozen keys each, written straight into etcd in the
//! layout `shardctl` writes): it becomes ready and scores with one of those tenants' keys.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shardline_shared::ids::ModelKey;
use shardline_testkit::fleet::bulk::{GRPC_DEFAULT_LIMIT, write_tenants};
use shardline_testkit::fleet::{TestFleet, rows};

const TENANTS: usize = 4000;
const KEYS_EACH: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_becomes_ready_and_scores_beyond_one_grpc_message() {
    let mut fleet = TestFleet::builder().workers(1).routers(0).start().await;
    let (tenants, bytes) = write_tenants(&fleet.cp, TENANTS, KEYS_EACH).await.unwrap();
    let chosen = &tenants[TENANTS - 7];
    fleet.publish(chosen.id.as_str(), "risk", "1", 3).await;
    assert!(bytes > GRPC_DEFAULT_LIMIT, "{bytes} bytes");

    // Ready means its first listing, all of it, is in its snapshot.
    fleet.add_router().await;
    let model = ModelKey::parse_shard_key(&format!("{}/risk", chosen.id)).unwrap();
    fleet
        .wait_assignment(&model, Duration::from_secs(20), |a| a.workers.len() == 1)
        .await;
    let reply = fleet.infer(0, &chosen.key, "risk", &rows(2, 1)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.scores().len(), 2);
}
