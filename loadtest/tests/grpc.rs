//! `loadtest run --protocol grpc` against a real fleet (etcd, store, worker and a router
//! serving gRPC on `--grpc-listen`): in closed loop every call is answered OK and
//! [`GRPC_STREAMS_PER_CONNECTION`] calls share each HTTP/2 connection; in open loop no
//! more than `--connections` connections are opened; a refused call (a bad key) is
//! counted under the REST API's status for it, not as a transport failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use shardline_loadtest::client::GRPC_STREAMS_PER_CONNECTION;
use shardline_loadtest::loadgen::{self, Mix, Mode, Options, Report, TenantKey};
use shardline_loadtest::protocol::Protocol;
use shardline_testkit::fleet::{DIM, TestFleet};
use shardline_testkit::models::mlp::INPUT_NAME;

async fn fleet() -> (TestFleet, SocketAddr, String) {
    let grpc = SocketAddr::from(([127, 0, 0, 1], shardline_testkit::free_port()));
    let fleet = TestFleet::builder()
        .workers(1)
        .router_arg(&format!("--grpc-listen={grpc}"))
        .start()
        .await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    (fleet, grpc, key)
}

fn options(grpc: SocketAddr, tenants: Vec<TenantKey>, mode: Mode) -> Options {
    let mut o = Options::new(format!("http://{grpc}"), tenants, mode);
    o.protocol = Protocol::Grpc;
    o.input = Some(INPUT_NAME.to_owned());
    o.features = Some(DIM);
    o.duration = Duration::from_millis(1500);
    o.timeout = Duration::from_secs(10);
    o.mix = Mix::Uniform;
    o
}

fn tenant(key: &str) -> TenantKey {
    TenantKey {
        tenant: "acme".to_owned(),
        key: key.to_owned(),
        models: vec!["risk".to_owned()],
    }
}

/// Waits until the router scores the model (it is placed shortly after it is published).
async fn scoring(grpc: SocketAddr, key: &str) {
    shardline_testkit::eventually!(Duration::from_secs(30), "a first OK over gRPC", {
        let mut o = options(grpc, vec![tenant(key)], Mode::Closed { concurrency: 1 });
        o.duration = Duration::from_millis(100);
        let r = loadgen::run(&o).await.unwrap();
        (r.ok > 0 && r.error_count() == 0).then_some(())
    });
}

fn describe(r: &Report) -> String {
    format!("{}\n{:?}", r.table(), r.error_messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_multiplexes_calls_on_few_connections() {
    let (_fleet, grpc, key) = fleet().await;
    scoring(grpc, &key).await;
    let concurrency = 2 * GRPC_STREAMS_PER_CONNECTION;
    let o = options(grpc, vec![tenant(&key)], Mode::Closed { concurrency });
    let r = loadgen::run(&o).await.unwrap();
    assert_eq!(r.error_count(), 0, "{}", describe(&r));
    assert!(r.ok > concurrency as u64, "{}", describe(&r));
    assert_eq!(r.connections, 2, "{}", describe(&r));
    assert_eq!(r.setup.protocol, Protocol::Grpc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_refusals_by_status_on_its_connections() {
    let (_fleet, grpc, key) = fleet().await;
    scoring(grpc, &key).await;
    let mode = Mode::Open {
        rate: 200.0,
        connections: 2,
    };
    let o = options(grpc, vec![tenant(&key), tenant("not-a-key")], mode);
    let r = loadgen::run(&o).await.unwrap();
    assert!(r.ok > 0, "{}", describe(&r));
    let refused = r.errors.get("401").copied().unwrap_or(0);
    assert!(refused > 0, "{}", describe(&r));
    assert_eq!(refused, r.error_count(), "{}", describe(&r));
    assert_eq!(r.ok + refused, r.requests, "{}", describe(&r));
    assert!(r.connections <= 2, "{}", describe(&r));
}
