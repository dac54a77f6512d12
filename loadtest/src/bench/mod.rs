//! Benchmarks the `loadtest` binary runs against real neighbours on loopback.
//!
//! Each benchmark reports its speed as a ratio against a baseline measured in the same run,
//! so the figures mean something on a busy or slow machine. [`worker`] compares the
//! worker's HTTP path with calling the model in-process (warm) and with a bare fetch +
//! parse of the same artifact (cold). [`churn`] runs one worker on five times more models
//! than its budget holds and watches its RSS. [`router`] compares the router's hop, and
//! nginx's as a plain reverse proxy, with the worker reached directly; [`mlserver`]
//! compares Shardline end to end with a peer server (MLServer) serving the same
//! scikit-learn weights. Both drive every target with the closed-loop client of [`load`]
//! and start the Shardline side with [`stack`] (etcd, a `file://` store, one release
//! worker and one release router); [`crate::procfs`] reads their CPU time and memory. They score
//! MLPs built with [`crate::models::MlpArtifact`] and published with
//! [`crate::models::publish`]; [`crate::stats`] holds the percentile maths and [`docs`] writes
//! each benchmark's section of `docs/benchmarks.md`. [`scale`] fills etcd with 100,000
//! tenants and 1,000 simulated workers and measures routers, a worker and `shardctl`
//! against the targets of that size.

pub mod churn;
pub mod docs;
pub mod load;
pub mod mlserver;
pub mod router;
pub mod scale;
pub mod stack;
pub mod worker;
