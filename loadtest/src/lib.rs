//! Shardline's test harness and load tools.
//!
//! [`harness`] starts real etcd and S3 servers on loopback for integration tests, here and
//! in the other crates (as a dev-dependency). [`bench`] holds the benchmarks of the
//! `loadtest` binary; [`loadgen`] is its load generator (`loadtest run`), open or closed
//! loop against a running router, also callable in-process.

pub mod bench;
pub mod fleet;
pub mod harness;
pub mod loadgen;
