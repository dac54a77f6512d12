//! Shardline's test harness and load tools.
//!
//! [`harness`] starts real etcd and S3 servers on loopback for integration tests, here and
//! in the other crates (as a dev-dependency). The `loadtest` binary will drive a running
//! fleet with bounded, loopback-only request loops.

pub mod bench;
pub mod fleet;
pub mod harness;
