//! Shardline's test kit: everything the workspace's tests (and the `loadtest` tool) need
//! to start the real world on loopback, and nothing of the product itself.
//!
//! Always here (no Shardline crate, no candle):
//! - [`binary`] finds the workspace's `router`, `worker` and `shardctl` builds;
//! - [`free_port`] hands out loopback ports, never the same one twice in a process;
//! - [`ManagedProcess`] (`process.rs`) owns one child process: log file, readiness poll,
//!   signals (stop, kill, pause, resume), and drop that kills, reaps, and keeps the logs of
//!   a failed (panicking) test;
//! - [`EtcdProcess`] (`etcd.rs`) is a single-member etcd that can be restarted on the same
//!   ports and data, or restored from an `etcdctl snapshot save` backup; [`S3Process`] (`s3.rs`) is moto's S3 server with a bucket made; it can
//!   be paused to simulate an outage without losing objects;
//! - [`metric_sum`] reads Prometheus text; [`post_head_only`] sends a head without its
//!   body; [`eventually!`] / [`wait::eventually`] poll a condition; [`TOKEN`] is the
//!   internal router ↔ worker token every test fleet uses;
//! - [`python`]: the test venv's interpreter and Python scripts run with JSON in and
//!   out (standard clients such as `tritonclient` and KServe's SDK);
//! - [`hostile`]: hostile clients (held connections, partial heads, clients that never
//!   read, trickled bodies, request smuggling probes) and the server's open descriptors.
//!
//! Feature `models`: [`models::MlpArtifact`], the MLP artifact writer (`config.json` +
//! `model.safetensors`, with an `f64` reference forward pass; safetensors, not candle).
//! Feature `fleet` (implies `models`): [`models::publish`] and [`fleet::TestFleet`], the
//! one way tests start a whole Shardline (etcd, a store, workers and routers): routers
//! and workers run as processes, or in the test process through a suite's own
//! [`fleet::Launcher`] (its crate's `serve()`, on the same argument list);
//! [`fleet::Spec`] starts one worker or router on its own.
//!
//! The crates this kit depends on under `fleet` (`shardline-control`,
//! `shardline-artifacts`) use it without that feature, so no crate depends on itself
//! through its tests. Binaries come from `$SHARDLINE_ETCD_BIN` and `$SHARDLINE_MOTO_SERVER`
//! when set, otherwise from `PATH`, `/usr/bin/etcd` and the workspace's `.venv`.
//!
//! ```no_run
//! use shardline_testkit::{EtcdProcess, S3Process};
//!
//! # async fn watcher_survives_an_etcd_restart() -> anyhow::Result<()> {
//! let (etcd, s3) = tokio::try_join!(EtcdProcess::start(), S3Process::start())?;
//! let mut etcd = etcd;
//!
//! // Point the code under test at them.
//! let mut worker = tokio::process::Command::new("shardline-worker");
//! worker
//!     .arg("--etcd")
//!     .arg(etcd.endpoint())
//!     .arg("--store")
//!     .arg(s3.store_url())
//!     .envs(s3.env());
//!
//! // Take etcd away and bring it back on the same port with the same data.
//! etcd.kill().await?;
//! etcd.restart().await?;
//! # Ok(())
//! # }
//! ```

mod bins;
pub mod certs;
mod etcd;
pub mod hostile;
mod http;
mod port;
mod process;
mod prom;
pub mod python;
mod s3;
pub mod wait;

#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(feature = "models")]
pub mod models;

pub use bins::{BIN_DIR_ENV, bin_dirs, binary, find_binary};
pub use etcd::{
    ETCD_BIN_ENV, ETCDCTL_BIN_ENV, EtcdProcess, find_etcd, find_etcdctl, single_member_args,
};
pub use http::post_head_only;
pub use port::free_port;
pub use process::{ManagedProcess, http_client, on_path, program_from_env, send_signal};
pub use prom::metric_sum;
pub use s3::{DEFAULT_BUCKET, MOTO_SERVER_ENV, S3Process, find_moto_server};

/// The internal router ↔ worker token of every test fleet and benchmark stack.
pub const TOKEN: &str = "test-internal-token-0123";
