//! What every Shardline server binary does the same way, apart from its own product:
//!
//! - [`process`]: command-line parsing (one-line errors, a usage exit status) and
//!   waiting for SIGINT or SIGTERM;
//! - [`http`]: reading a request body under a size limit;
//! - [`metrics`]: the `/metrics` endpoint (Prometheus text format) on its own port;
//! - [`conn`]: client connection limits — timeouts, head size, the number of open
//!   connections, the shutdown grace period — and hyper served under them.
//!
//! `http` and `metrics` are the default feature `http`; `shardctl` leaves it out, so the
//! CLI compiles no HTTP server. No etcd, no models: the router, the worker and `shardctl` share this, and the etcd
//! crate (`shardline-control`) does not depend on it; under `http` it takes flag units
//! and metric names from `shardline-shared`.

#[cfg(feature = "http")]
pub mod conn;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod metrics;
pub mod process;
