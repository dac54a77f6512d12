//! The flags of `loadtest run`, as clap parses them; [`Flags::options`] turns them and the
//! loaded keys file into [`Options`]. `Options` itself holds what flags cannot: the
//! tenants read from the keys file, and the pace and mix as enums ([`Mode`], [`Mix`]).

use std::path::PathBuf;
use std::time::Duration;

use shardline_shared::units::parse_duration;

use super::{DEFAULT_ZIPF, Mix, Mode, Options, TenantKey};
use crate::protocol::Protocol;

/// `loadtest run`'s flags (every one also read from `SHARDLINE_LOADTEST_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("pace").required(true).args(["rate", "concurrency"])))]
pub struct Flags {
    /// The router, `http://host:port` (plain HTTP only; with `--protocol grpc`, its gRPC
    /// listener, `--grpc-listen`).
    #[arg(long, env = "SHARDLINE_LOADTEST_ROUTER")]
    pub router: String,
    /// JSON keys file: `[{"tenant": "t1", "key": "…", "models": ["risk"]}, …]`, busiest
    /// tenant first.
    #[arg(long, env = "SHARDLINE_LOADTEST_KEYS")]
    pub keys: PathBuf,
    /// Open loop: requests per second, on a fixed schedule.
    #[arg(long, env = "SHARDLINE_LOADTEST_RATE")]
    pub rate: Option<f64>,
    /// Open loop: at most this many connections; requests due while all are busy wait
    /// (and that wait counts in their latency).
    #[arg(long, env = "SHARDLINE_LOADTEST_CONNECTIONS", default_value_t = 256)]
    pub connections: usize,
    /// Closed loop: connections, each sending again as soon as it is answered.
    #[arg(long, env = "SHARDLINE_LOADTEST_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Zipf exponent of the tenant mix (rank = position in the keys file).
    #[arg(long, env = "SHARDLINE_LOADTEST_ZIPF", default_value_t = DEFAULT_ZIPF)]
    pub zipf: f64,
    /// Uniform tenant mix instead of Zipf.
    #[arg(long, env = "SHARDLINE_LOADTEST_UNIFORM", conflicts_with = "zipf")]
    pub uniform: bool,
    /// Rows per request.
    #[arg(long, env = "SHARDLINE_LOADTEST_BATCH", default_value_t = 1)]
    pub batch: usize,
    /// Features per row (default: from `GET /v2/models/{model}` of the first tenant's
    /// first model, else 64).
    #[arg(long, env = "SHARDLINE_LOADTEST_FEATURES")]
    pub features: Option<usize>,
    /// Input name (default: from the same metadata, else `features`).
    #[arg(long, env = "SHARDLINE_LOADTEST_INPUT")]
    pub input: Option<String>,
    /// How long to start requests for, e.g. `30s`, `5m`.
    #[arg(long, env = "SHARDLINE_LOADTEST_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Per-request deadline (open loop: from the intended send time).
    #[arg(long, env = "SHARDLINE_LOADTEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seed of the tenant and model choices and of the feature values.
    #[arg(long, env = "SHARDLINE_LOADTEST_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Request encoding: `http-json` (JSON tensors), `http-binary` (binary tensor data
    /// both ways, as tritonclient sends by default) or `grpc` (OIP gRPC `ModelInfer` with
    /// raw FP32 contents; 8 calls share each HTTP/2 connection in closed loop, and in open
    /// loop `--connections` counts HTTP/2 connections).
    #[arg(long, env = "SHARDLINE_LOADTEST_PROTOCOL", value_enum, default_value_t = Protocol::HttpJson)]
    pub protocol: Protocol,
    /// Print the result as one JSON object instead of a table.
    #[arg(long, env = "SHARDLINE_LOADTEST_JSON")]
    pub json: bool,
}

impl Flags {
    /// How requests are paced: open loop with `--rate`, else closed with `--concurrency`.
    pub fn mode(&self) -> Option<Mode> {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => Some(Mode::Open {
                rate,
                connections: self.connections,
            }),
            (None, Some(concurrency)) => Some(Mode::Closed { concurrency }),
            (None, None) => None,
        }
    }

    /// The run these flags describe, on `tenants` (from [`Flags::keys`]) at `mode`.
    pub fn options(&self, tenants: Vec<TenantKey>, mode: Mode) -> Options {
        let mut options = Options::new(self.router.clone(), tenants, mode);
        options.mix = if self.uniform {
            Mix::Uniform
        } else {
            Mix::Zipf(self.zipf)
        };
        options.duration = self.duration;
        options.batch = self.batch;
        options.features = self.features;
        options.input = self.input.clone();
        options.timeout = self.timeout;
        options.seed = self.seed;
        options.protocol = self.protocol;
        options
    }
}
