//! The worker's command line and environment (`SHARDLINE_<FLAG>`), parsed once and
//! validated completely: every problem is reported together, and bad configuration
//! exits with status 64.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use shardline_service::conn::{ConnArgs, ConnLimits};
use shardline_shared::ids::WorkerId;
use shardline_shared::keys::Prefix;

pub use shardline_shared::units::{parse_bytes, parse_duration};

/// Shardline worker: loads tenants' models on demand from an object store and scores
/// Open Inference Protocol v2 requests forwarded by routers.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    version,
    after_help = "Example:\n  worker --listen 0.0.0.0:9100 --advertise 10.0.3.7:9100 \\\n    --etcd http://etcd:2379 --store s3://models --memory-budget 2GiB --idle-ttl 10m"
)]
pub struct WorkerArgs {
    /// Address to serve the internal OIP API on.
    #[arg(long, env = "SHARDLINE_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "SHARDLINE_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, env = "SHARDLINE_PREFIX", default_value = "/shardline")]
    pub prefix: String,
    /// Model store: `file:///abs/dir` or `s3://bucket[/prefix]` (AWS_* env honoured).
    #[arg(long, env = "SHARDLINE_STORE")]
    pub store: String,
    /// Memory for resident models, including the transient copy while loading.
    #[arg(long, env = "SHARDLINE_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// Evict models unused for this long.
    #[arg(long, env = "SHARDLINE_IDLE_TTL", value_parser = parse_duration, default_value = "10m")]
    pub idle_ttl: Duration,
    /// Worker id in etcd (default: the host name, e.g. a StatefulSet pod name).
    #[arg(long, env = "SHARDLINE_ID")]
    pub id: Option<String>,
    /// Address routers use to reach this worker (default: --listen, unless unspecified).
    #[arg(long, env = "SHARDLINE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address to serve /metrics on.
    #[arg(long, env = "SHARDLINE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Shared secrets routers present in `x-shardline-token`, comma-separated: any of
    /// them is accepted, so a token can be rotated without downtime (add the new one
    /// here, switch the routers, then drop the old one; see docs/operations.md).
    #[arg(long, env = "SHARDLINE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: String,
    /// Largest accepted request body.
    #[arg(long, env = "SHARDLINE_MAX_BODY", value_parser = parse_bytes, default_value = "8MiB")]
    pub max_body: u64,
    /// Concurrent requests per model before answering 429.
    #[arg(long, env = "SHARDLINE_MAX_IN_FLIGHT_PER_MODEL", default_value_t = 64)]
    pub max_in_flight_per_model: u32,
    /// Largest batch (rows) per request.
    #[arg(long, env = "SHARDLINE_MAX_BATCH_ROWS", default_value_t = 4096)]
    pub max_batch_rows: usize,
    /// Memory for activations of forward passes in progress (every layer's output for
    /// a request's rows, reserved before scoring): past it, 413 for a request that can
    /// never fit, 503 while others hold it.
    #[arg(long, env = "SHARDLINE_INFERENCE_MEMORY", value_parser = parse_bytes, default_value = "512MiB")]
    pub inference_memory: u64,
    /// Model builds and large forward passes running at once on blocking threads
    /// (default: one per core).
    #[arg(long, env = "SHARDLINE_MAX_BLOCKING")]
    pub max_blocking: Option<usize>,
    /// Large forward passes waiting for one of --max-blocking besides those running;
    /// past it a request gets 503 with `Retry-After` at once. Model loads are never
    /// refused (other requests wait on them).
    #[arg(long, env = "SHARDLINE_MAX_BLOCKING_QUEUE", default_value_t = 64)]
    pub max_blocking_queue: usize,
    /// Lease TTL of the worker's registration.
    #[arg(long, env = "SHARDLINE_LEASE_TTL", value_parser = parse_duration, default_value = "10s")]
    pub lease_ttl: Duration,
    /// Label metrics per tenant model (bounded by the number of resident models).
    #[arg(long, env = "SHARDLINE_PER_MODEL_METRICS")]
    pub per_model_metrics: bool,
    /// Connection limits (timeouts, head size, open connections, shutdown grace).
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub args: WorkerArgs,
    pub id: WorkerId,
    pub advertise: String,
    pub prefix: Prefix,
    pub conn: ConnLimits,
}

impl WorkerArgs {
    /// The tokens `--internal-token` lists (comma-separated), each accepted.
    pub fn internal_tokens(&self) -> Vec<String> {
        shardline_shared::wire::token_list(&self.internal_token)
    }

    /// Checks everything and reports every problem at once.
    pub fn validate(self) -> Result<WorkerConfig, Vec<String>> {
        let mut errors = Vec::new();
        let id = match self.id.clone().or_else(default_id) {
            Some(raw) => WorkerId::new(raw).map_err(|e| errors.push(format!("--id: {e}"))),
            None => {
                errors.push("--id is required (the host name is not a valid worker id)".into());
                Err(())
            }
        };
        let prefix = Prefix::new(&self.prefix).map_err(|e| errors.push(format!("--prefix: {e}")));
        let advertise = match &self.advertise {
            Some(a) if a.parse::<SocketAddr>().is_ok() || a.rsplit_once(':').is_some() => {
                Ok(a.clone())
            }
            Some(a) => {
                errors.push(format!("--advertise {a:?} must be host:port"));
                Err(())
            }
            None if self.listen.ip().is_unspecified() => {
                errors.push(format!(
                    "--advertise is required when listening on {} (routers need a reachable address)",
                    self.listen
                ));
                Err(())
            }
            None => Ok(self.listen.to_string()),
        };
        if self.etcd.iter().all(|e| e.trim().is_empty()) {
            errors.push("--etcd needs at least one endpoint".into());
        }
        if self.memory_budget < 1 << 20 {
            errors.push("--memory-budget must be at least 1MiB".into());
        }
        if self.max_blocking == Some(0) {
            errors.push("--max-blocking must be positive".into());
        }
        if self.inference_memory < 1 << 20 {
            errors.push("--inference-memory must be at least 1MiB".into());
        }
        if self.internal_tokens().iter().any(|t| t.len() < 16) {
            errors.push("--internal-token: every token must be at least 16 characters".into());
        }
        if self.idle_ttl.is_zero() || self.lease_ttl < Duration::from_secs(2) {
            errors.push("--idle-ttl must be positive and --lease-ttl at least 2s".into());
        }
        if self.max_batch_rows == 0 || self.max_in_flight_per_model == 0 || self.max_body < 1024 {
            errors.push(
                "--max-batch-rows and --max-in-flight-per-model must be positive, --max-body at least 1KiB"
                    .into(),
            );
        }
        let conn = self.conn.validate(&mut errors);
        match (id, prefix, advertise, conn) {
            (Ok(id), Ok(prefix), Ok(advertise), Some(conn)) if errors.is_empty() => {
                Ok(WorkerConfig {
                    args: self,
                    id,
                    advertise,
                    prefix,
                    conn,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The host name, when it is a valid worker id (Kubernetes pod names are).
fn default_id() -> Option<String> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    let name = name.trim().to_ascii_lowercase();
    WorkerId::new(name.clone()).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a command line made of sensible defaults, each overridable by `extra`
    /// (flag, value) pairs.
    fn args(extra: &[(&str, &str)]) -> Result<WorkerArgs, clap::Error> {
        let mut flags = vec![
            ("--etcd", "http://127.0.0.1:2379"),
            ("--store", "file:///tmp"),
            ("--memory-budget", "2GiB"),
            ("--internal-token", "0123456789abcdef"),
            ("--id", "w-1"),
        ];
        for (flag, value) in extra {
            flags.retain(|(f, _)| f != flag);
            flags.push((flag, value));
        }
        let argv = std::iter::once("worker").chain(flags.iter().flat_map(|(f, v)| [*f, *v]));
        WorkerArgs::try_parse_from(argv)
    }

    #[test]
    fn valid_config() {
        let c = args(&[("--idle-ttl", "30s")]).unwrap().validate().unwrap();
        assert_eq!(c.args.memory_budget, 2 << 30);
        assert_eq!(c.args.idle_ttl, Duration::from_secs(30));
        assert_eq!(c.advertise, "127.0.0.1:9100");
        assert_eq!(c.id.as_str(), "w-1");
        assert_eq!((c.args.max_blocking, c.args.max_blocking_queue), (None, 64));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errs = args(&[
            ("--listen", "0.0.0.0:9100"),
            ("--id", "W_1"),
            ("--prefix", "nope"),
            ("--internal-token", "short"),
            ("--max-connections", "0"),
            ("--max-blocking", "0"),
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "--id",
            "--prefix",
            "--advertise",
            "--internal-token",
            "--max-connections",
            "--max-blocking",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn bad_units_are_flag_errors() {
        for (flag, bad) in [("--memory-budget", "huge"), ("--idle-ttl", "forever")] {
            let err = args(&[(flag, bad)]).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
