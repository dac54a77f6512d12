//! Shardline's load tools and sample models (real etcd and S3 come from
//! `shardline-testkit`).
//!
//! [`models`] re-exports the test kit's MLP artifact writer, and trains per-tenant risk models on synthetic authentication
//! events. [`bench`] holds the benchmarks of the `loadtest` binary; [`loadgen`] is its load
//! generator (`loadtest run`); [`fleet`] starts a local fleet and [`demo`] is `just demo`.
//! [`cli`] is the `loadtest` command tree; [`procfs`] reads `/proc`.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod fleet;
pub mod loadgen;
pub mod models;
pub mod procfs;
