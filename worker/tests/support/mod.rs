//! The worker's suite on the test kit's one fleet: etcd, moto's S3 and workers run by
//! the worker's own `serve()` in the test process ([`launch`]), started on demand with
//! the budget, idle TTL and in-flight limit each test needs.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use shardline_artifacts::StoreOptions;
use shardline_testkit::fleet::{Launch, Launcher, Node, TestFleet};

/// Runs a worker in this process: the same argument list as the binary, its store opened
/// with short timeouts so that an S3 outage shows within a second or two.
pub fn launch() -> Launcher {
    Launcher::new(|start| async move {
        let options = StoreOptions {
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(1500),
            max_retries: 0,
            ..StoreOptions::default()
        };
        let metrics = Some(start.metrics_listener);
        shardline_worker::serve::serve_command_line(
            &start.args,
            options.with_env(start.env),
            start.listener,
            metrics,
            start.shutdown,
        )
        .await
    })
}

/// Etcd and S3, no worker or router yet; workers run in this process.
pub async fn fleet() -> TestFleet {
    TestFleet::builder()
        .workers(0)
        .routers(0)
        .s3()
        .lease_ttl("10s")
        .in_process(Launch::workers(launch()))
        .start()
        .await
}

/// Starting a worker with the flags a test varies.
pub trait Workers {
    /// A worker with this budget and idle TTL.
    async fn worker(&self, id: &str, budget: u64, idle_ttl: &str) -> Node;
    /// As [`Workers::worker`], with a per-model in-flight limit.
    async fn worker_with(&self, id: &str, budget: u64, idle_ttl: &str, in_flight: u32) -> Node;
}

impl Workers for TestFleet {
    async fn worker(&self, id: &str, budget: u64, idle_ttl: &str) -> Node {
        self.worker_with(id, budget, idle_ttl, 256).await
    }

    async fn worker_with(&self, id: &str, budget: u64, idle_ttl: &str, in_flight: u32) -> Node {
        let spec = self
            .worker_spec(id)
            .set("--memory-budget", budget.to_string())
            .set("--idle-ttl", idle_ttl)
            .set("--max-in-flight-per-model", in_flight.to_string());
        self.start_node(spec).await
    }
}

pub fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let err = (f64::from(*g) - w).abs();
        assert!(err <= 1e-5 * w.abs().max(1e-3) + 1e-6, "got {g}, want {w}");
    }
}
