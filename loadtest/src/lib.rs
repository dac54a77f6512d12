//! Shardline's test harness, load tools and sample models.
//!
//! [`harness`] starts real etcd and S3 servers on loopback for integration tests, here and
//! in the other crates (as a dev-dependency). [`models`] builds the MLP artifacts tests and
//! benchmarks publish, and trains per-tenant risk models on synthetic authentication
//! events. [`bench`] holds the benchmarks the `loadtest` binary runs.

pub mod bench;
pub mod harness;
pub mod models;
