//! Shardline's load tools and sample models (real etcd and S3 come from
//! `shardline-testkit`).
//!
//! [`models`] re-exports the test kit's MLP artifact writer, and trains per-tenant risk models on synthetic authentication
//! events. [`bench`] holds the benchmarks of the `loadtest` binary; [`loadgen`] is its load
//! generator (`loadtest run`); [`fleet`] starts a local fleet and [`demo`] is `just demo`.
//! [`cli`] is the `loadtest` command tree; [`procfs`] reads `/proc`.
//!
//! Below those, the leaves: [`client`] is the HTTP/1.1 and HTTP/2 client the benchmarks
//! and the load generator both send with, [`protocol`] what their requests carry
//! (`--protocol`: JSON or binary tensors over HTTP, or gRPC), [`grpc`] the gRPC calls'
//! framing and answers (both use it; it imports nothing), [`stats`] the percentile maths
//! both report with, and [`args`] the flag value parsers. Dependencies point one way:
//! `cli` → `demo`, `bench` → `fleet` → `loadgen` → the leaves (`models` and `procfs` are
//! used from several levels and use only the leaves).

pub mod args;
pub mod bench;
pub mod cli;
pub mod client;
pub mod demo;
pub mod fleet;
pub mod grpc;
pub mod loadgen;
pub mod models;
pub mod procfs;
pub mod protocol;
pub mod stats;
