//! Benchmarks the `loadtest` binary runs against real neighbours on loopback.
//!
//! Each benchmark reports its speed as a ratio against a baseline measured in the same run,
//! so the figures mean something on a busy or slow machine. [`worker`] compares the
//! worker's HTTP path with calling the model in-process (warm) and with a bare fetch +
//! parse of the same artifact (cold). [`churn`] runs one worker on five times more models than its budget holds and
//! watches its RSS. [`router`] compares the router's hop, and nginx's as a
//! plain reverse proxy, with the worker reached directly, under the closed-loop client of
//! [`load`]. They score MLPs built by [`crate::models::MlpArtifact::random`] and published
//! with [`crate::models::publish`]; [`stats`] holds the percentile maths and [`docs`] writes
//! each benchmark's section of `docs/benchmarks.md`.

pub mod churn;
pub mod docs;
pub mod load;
pub mod router;
pub mod stats;
pub mod worker;
