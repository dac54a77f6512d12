//! `shardctl tenants` and `shardctl assignments` on a control plane larger than the old
//! 4 MiB gRPC message limit (thousands of tenants with a dozen keys each, written straight
//! into etcd): both complete and list every one.
#![allow(clippy::unwrap_used)]

use shardline_shared::ids::WorkerId;
use shardline_testkit::fleet::TestFleet;
use shardline_testkit::fleet::bulk::{GRPC_DEFAULT_LIMIT, write_assignments, write_tenants};
use shardline_testkit::fleet::ctl::ctl_json;

const TENANTS: usize = 4000;
const KEYS_EACH: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_assignments_list_every_one_beyond_one_grpc_message() {
    let fleet = TestFleet::builder().workers(0).routers(0).start().await;
    let (tenants, mut bytes) = write_tenants(&fleet.cp, TENANTS, KEYS_EACH).await.unwrap();
    let workers = [WorkerId::new("w-0").unwrap(), WorkerId::new("w-1").unwrap()];
    bytes += write_assignments(&fleet.cp, &tenants, "risk", &workers)
        .await
        .unwrap();
    assert!(bytes > GRPC_DEFAULT_LIMIT, "{bytes} bytes");

    let listed = ctl_json(&fleet, &["tenants"]).await;
    let rows = listed["tenants"].as_array().unwrap();
    assert_eq!(rows.len(), TENANTS);
    assert!(rows.iter().all(|t| t["keys"] == KEYS_EACH));
    assert_eq!(rows[42]["tenant"], tenants[42].id.to_string());

    let listed = ctl_json(&fleet, &["assignments"]).await;
    let rows = listed["assignments"].as_array().unwrap();
    assert_eq!(rows.len(), TENANTS);
    assert!(
        rows.iter()
            .all(|a| a["workers"] == serde_json::json!(["w-0", "w-1"]))
    );
}
