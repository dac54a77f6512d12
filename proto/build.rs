//! Generates the gRPC messages and service traits from `defs/` (the Open Inference
//! Protocol's `inference.GRPCInferenceService` and `grpc.health.v1`): messages and the
//! server side only (clients frame messages themselves), with `protoc` (installed by
//! `scripts/ensure-deps.sh`).

fn main() -> std::io::Result<()> {
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        // Raw tensor contents as `Bytes`: slices of the received message, not copies.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_protos(
            &["defs/grpc_predict_v2.proto", "defs/health.proto"],
            &["defs"],
        )
}
