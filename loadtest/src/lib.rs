//! Shardline's test harness, load tools and sample models.
//!
//! [`harness`] starts real etcd and S3 servers on loopback for integration tests, here and
//! in the other crates (as a dev-dependency). [`models`] builds the MLP artifacts tests and
//! benchmarks publish, and trains per-tenant risk models on synthetic authentication
//! events. [`bench`] holds the benchmarks of the `loadtest` binary; [`loadgen`] is its load
//! generator (`loadtest run`); [`fleet`] starts a local fleet and [`demo`] is `just demo`.

pub mod bench;
pub mod demo;
pub mod fleet;
pub mod harness;
pub mod loadgen;
pub mod models;
