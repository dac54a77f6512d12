//! Benchmarks the `loadtest` binary runs against real neighbours on loopback.
//!
//! Each benchmark reports its speed as a ratio against a baseline measured in the same run,
//! so the figures mean something on a busy or slow machine. [`worker`] compares the
//! worker's HTTP path with calling the model in-process (warm) and with a bare fetch +
//! parse of the same artifact (cold). [`model`] builds the deterministic MLP they score,
//! [`publish`] uploads it and registers it as live, [`stats`] holds the percentile maths.

pub mod model;
pub mod publish;
pub mod stats;
pub mod worker;
