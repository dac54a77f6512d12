//! The gRPC wire types both ends use: the messages and service traits generated from
//! `defs/grpc_predict_v2.proto` (the Open Inference Protocol's
//! `inference.GRPCInferenceService`) and `defs/health.proto` (`grpc.health.v1`). The
//! router serves them (`router/src/grpc/`); the load tools build and read the same
//! messages (`loadtest --protocol grpc`). Generated code only: no I/O, no logic.

/// Messages and the service trait of `inference.GRPCInferenceService`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Messages and the service trait of `grpc.health.v1.Health`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// The path of `ModelInfer` (`/package.Service/Method`), as a client sends it.
pub const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";
