//! Shardline's router: the authenticated Open Inference Protocol front door that maps a
//! tenant's request onto its shard of workers. The request path only: the placement
//! controller it runs is `shardline-controller`, the operator CLI is `shardline-shardctl`.
//!
//! Pure policy (no I/O, time passed in, property-tested):
//! - [`select`]: which shard member to try first (power of two choices) and the
//!   failover order;
//! - [`budget`]: the retry budget that keeps failover from becoming a retry storm;
//! - [`limiter`]: per-tenant in-flight and rate limits.
//!
//! Serving:
//! - [`routes`]: the public OIP v2 API and authentication; [`proxy`]: the inference
//!   path (resolve, validate, choose, forward, fail over); [`upstream`]: the pooled
//!   client to workers; [`health`]: per-worker in-flight counts and passive ejection;
//! - [`state`], [`error`], [`metrics`], [`config`]: shared state, the status of every
//!   refusal, Prometheus metrics, flags;
//! - [`http1`]: serving HTTP/1.1 (the inference fast path, hyper for the rest);
//!   [`wire`]: the fast path's request heads and answer bytes;
//! - [`serve`]: wiring it together with etcd, `/metrics` and graceful shutdown.

pub mod budget;
pub mod config;
pub mod error;
pub mod health;
pub mod http1;
pub mod limiter;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod select;
pub mod serve;
pub mod state;
pub mod threads;
pub mod upstream;
pub mod wire;
