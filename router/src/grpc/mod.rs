//! The gRPC front door: the Open Inference Protocol's `inference.GRPCInferenceService`
//! (`proto/defs/grpc_predict_v2.proto`, generated in `shardline-proto`) and the standard `grpc.health.v1` service on
//! `--grpc-listen`, for clients such as `tritonclient.grpc`, KServe's and generated stubs.
//! It is another transport of the same inference service: every `ModelInfer` runs
//! [`crate::infer::handle`] — authentication from the `authorization: Bearer <key>`
//! metadata, resolution, the tenant's limits, the in-flight byte budget, validation,
//! member choice, failover and metrics — exactly as an HTTP request does.
//!
//! - [`convert`] (pure): a `ModelInferRequest` into the OIP JSON body workers take, and
//!   a worker's JSON answer back into a `ModelInferResponse`;
//! - [`status`] (pure): the gRPC status of every refusal (from the HTTP status the
//!   router and workers give it, in one place) and `grpc-timeout`;
//! - [`service`]: the `GRPCInferenceService` implementation; [`health`]: `grpc.health.v1`;
//!   [`meta`] (pure): readiness and model metadata from the snapshot;
//! - [`listen`]: serving the listener over HTTP/2 (plain or TLS) under the connection
//!   limits, and graceful shutdown; [`args`]: its flags.

pub mod args;
pub mod convert;
pub mod health;
pub mod listen;
pub mod meta;
pub mod service;
pub mod status;

/// Messages and the service trait of `inference.GRPCInferenceService` (`shardline-proto`).
pub use shardline_proto::inference as pb;

/// Messages and the service trait of `grpc.health.v1` (`shardline-proto`).
pub use shardline_proto::health as health_pb;

pub use self::args::GrpcArgs;
pub use self::listen::{GrpcServing, serve};
