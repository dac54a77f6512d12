//! Real infrastructure for integration tests: etcd and an S3 server as child processes on
//! 127.0.0.1, each in its own scratch directory, torn down on drop.
//!
//! - [`free_port`] hands out loopback ports, never the same one twice in a process.
//! - [`ManagedProcess`] (`process.rs`) owns one child process: log file, readiness poll,
//!   signals (stop, kill, pause, resume), and drop that kills, reaps, and keeps the logs of a
//!   failed (panicking) test.
//! - [`EtcdProcess`] (`etcd.rs`) is a single-member etcd that can be restarted on the same
//!   ports and data.
//! - [`S3Process`] (`s3.rs`) is moto's S3 server with a bucket made; it can be paused to
//!   simulate an outage without losing objects.
//!
//! Other crates use this module from their integration tests by depending on
//! `shardline-loadtest` as a dev-dependency. Binaries come from `$SHARDLINE_ETCD_BIN` and
//! `$SHARDLINE_MOTO_SERVER` when set, otherwise from `PATH`, `/usr/bin/etcd` and the
//! workspace's `.venv`.
//!
//! ```no_run
//! use shardline_loadtest::harness::{EtcdProcess, S3Process};
//!
//! # async fn watcher_survives_an_etcd_restart() -> anyhow::Result<()> {
//! let (etcd, s3) = tokio::try_join!(EtcdProcess::start(), S3Process::start())?;
//! let mut etcd = etcd;
//!
//! // Point the code under test at them.
//! let mut worker = tokio::process::Command::new("shardline-worker");
//! worker
//!     .arg("--etcd-endpoints")
//!     .arg(etcd.endpoint())
//!     .arg("--store-url")
//!     .arg(s3.store_url())
//!     .envs(s3.env());
//!
//! // Take etcd away and bring it back on the same port with the same data.
//! etcd.kill().await?;
//! etcd.restart().await?;
//! # Ok(())
//! # }
//! ```

mod etcd;
mod http;
mod port;
mod process;
mod prom;
mod s3;

pub(crate) use etcd::find_etcd;
pub use etcd::{ETCD_BIN_ENV, EtcdProcess};
pub use http::post_head_only;
pub use port::free_port;
pub use process::ManagedProcess;
pub(crate) use process::{http_client, on_path, program_from_env, send_signal};
pub use prom::metric_sum;
pub(crate) use s3::find_moto_server;
pub use s3::{DEFAULT_BUCKET, MOTO_SERVER_ENV, S3Process};
