//! The gRPC listener's flags (each with its `SHARDLINE_*` variable), flattened into the
//! router's own. The listener also takes the router's `--max-body` (largest message),
//! `--max-header-bytes` (largest header list), `--header-timeout`, `--idle-timeout`,
//! `--max-connections` (counted apart from HTTP's), `--shutdown-grace` and
//! `--tls-cert`/`--tls-key`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use shardline_shared::units::parse_duration;

/// Flags of the gRPC front door.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Address to serve the OIP gRPC API (`inference.GRPCInferenceService`) and
    /// `grpc.health.v1` on (default: no gRPC listener).
    #[arg(long, env = "SHARDLINE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Most requests (HTTP/2 streams) one gRPC connection may have open at once.
    #[arg(
        long,
        env = "SHARDLINE_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 128
    )]
    pub grpc_max_concurrent_streams: u32,
    /// How often an HTTP/2 ping checks that a gRPC client is still there (its answer
    /// must come within --grpc-keepalive-timeout, or the connection is closed).
    #[arg(long, env = "SHARDLINE_GRPC_KEEPALIVE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub grpc_keepalive_interval: Duration,
    /// How long the answer to a keepalive ping may take.
    #[arg(long, env = "SHARDLINE_GRPC_KEEPALIVE_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub grpc_keepalive_timeout: Duration,
}

impl GrpcArgs {
    /// Pushes every problem onto `errors`.
    pub fn validate(&self, errors: &mut Vec<String>) {
        if self.grpc_max_concurrent_streams == 0 {
            errors.push("--grpc-max-concurrent-streams must be positive".into());
        }
        if self.grpc_keepalive_interval < Duration::from_secs(1)
            || self.grpc_keepalive_timeout < Duration::from_secs(1)
        {
            errors.push(
                "--grpc-keepalive-interval and --grpc-keepalive-timeout must be at least 1s".into(),
            );
        }
    }
}
