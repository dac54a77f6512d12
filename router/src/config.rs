//! The router's command line and environment (`SHARDLINE_<FLAG>`), parsed once and
//! validated completely: every problem is reported together, and bad configuration
//! exits with status 64.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use shardline_service::conn::{ConnArgs, ConnLimits};
use shardline_shared::keys::Prefix;
use shardline_shared::units::{parse_bytes, parse_duration};

/// Shardline router: authenticates Open Inference Protocol v2 requests, finds the
/// tenant's model and forwards each request to a worker of the model's shard.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "router",
    version,
    after_help = "Example:\n  router --listen 0.0.0.0:8080 --metrics-listen 0.0.0.0:9090 \\\n    --etcd http://etcd-0:2379,http://etcd-1:2379 --internal-token \"$TOKEN\""
)]
pub struct RouterArgs {
    /// Address to serve the public OIP API on.
    #[arg(long, env = "SHARDLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "SHARDLINE_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, env = "SHARDLINE_PREFIX", default_value = "/shardline")]
    pub prefix: String,
    /// Address to serve /metrics on.
    #[arg(long, env = "SHARDLINE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Shared secret sent to workers in `x-shardline-token`. A comma-separated list is
    /// accepted, and its first token is sent (the rotation procedure in
    /// docs/operations.md switches routers from `old` to `new,old`).
    #[arg(long, env = "SHARDLINE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: String,
    /// PEM certificate chain for TLS on the public listener (with --tls-key; without
    /// both, plain HTTP). Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SHARDLINE_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SHARDLINE_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Router id (controller election, logs); default: the host name.
    #[arg(long, env = "SHARDLINE_ID")]
    pub id: Option<String>,
    /// Largest accepted request body.
    #[arg(long, env = "SHARDLINE_MAX_BODY", value_parser = parse_bytes, default_value = "8MiB")]
    pub max_body: u64,
    /// Request body bytes all requests in flight on this router may hold at once (32
    /// bodies of the default --max-body). Each request reserves its `Content-Length`
    /// (--max-body when chunked) once authenticated and admitted, before its body is
    /// read, until it ends; past the limit it gets 503 with `Retry-After`. At least
    /// --max-body.
    #[arg(long, env = "SHARDLINE_MAX_INFLIGHT_BYTES", value_parser = parse_bytes, default_value = "256MiB")]
    pub max_inflight_bytes: u64,
    /// Shadow requests (copies of sampled requests to a model's shadow version) this
    /// router runs at once; jobs beyond a queue of as many are dropped and counted.
    #[arg(long, env = "SHARDLINE_SHADOW_MAX_IN_FLIGHT", default_value_t = 32)]
    pub shadow_max_in_flight: usize,
    /// Shadow requests per second this router may send (0: no limit but the in-flight one).
    #[arg(long, env = "SHARDLINE_SHADOW_RATE", default_value_t = 200)]
    pub shadow_rate: u32,
    /// Largest batch (rows) per request, checked before forwarding.
    #[arg(long, env = "SHARDLINE_MAX_BATCH_ROWS", default_value_t = 4096)]
    pub max_batch_rows: usize,
    /// Deadline of a request that does not set `x-shardline-deadline-ms`.
    #[arg(long, env = "SHARDLINE_DEFAULT_DEADLINE", value_parser = parse_duration, default_value = "10s")]
    pub default_deadline: Duration,
    /// Largest deadline a client may ask for.
    #[arg(long, env = "SHARDLINE_MAX_DEADLINE", value_parser = parse_duration, default_value = "60s")]
    pub max_deadline: Duration,
    /// Longest one attempt on one worker may take before the next member is tried
    /// (the request's deadline still bounds the whole).
    #[arg(long, env = "SHARDLINE_ATTEMPT_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub attempt_timeout: Duration,
    /// Retries allowed, in percent of requests over `--retry-window`.
    #[arg(long, env = "SHARDLINE_RETRY_BUDGET_PERCENT", default_value_t = 20)]
    pub retry_budget_percent: u32,
    /// Retries per second always allowed on top of the percentage (for low traffic).
    #[arg(long, env = "SHARDLINE_RETRY_MIN_PER_SEC", default_value_t = 5)]
    pub retry_min_per_sec: u32,
    /// Window of the retry budget.
    #[arg(long, env = "SHARDLINE_RETRY_WINDOW", value_parser = parse_duration, default_value = "10s")]
    pub retry_window: Duration,
    /// Do not run the placement controller on this router.
    #[arg(long, env = "SHARDLINE_NO_CONTROLLER")]
    pub no_controller: bool,
    /// Lease TTL of this router's controller candidacy (failover time of the controller).
    #[arg(long, env = "SHARDLINE_CONTROLLER_LEASE_TTL", value_parser = parse_duration, default_value = "5s")]
    pub controller_lease_ttl: Duration,
    /// Most balancing moves the placement controller makes on its own per minute (a
    /// shard member moved from a busy worker to an idle one, prefetched first), when the
    /// slot load strays beyond max/avg 1.05 or min/avg 0.95; 0 leaves balancing to
    /// `shardctl rebalance`. Repairs are not limited.
    #[arg(
        long,
        env = "SHARDLINE_MAX_BALANCE_MOVES_PER_MINUTE",
        default_value_t = 60
    )]
    pub max_balance_moves_per_minute: u32,
    /// Serving threads, each running a single-threaded runtime that serves the client
    /// connections handed to it (default: one per core). Only as many as the load needs
    /// take connections (see --min-threads). The control plane runs on the main thread
    /// besides.
    #[arg(long, env = "SHARDLINE_THREADS")]
    pub threads: Option<usize>,
    /// Serving threads that always take connections (default 1; equal to --threads: all
    /// of them, whatever the load). More are used while the ones in use run near a full
    /// core each.
    #[arg(long, env = "SHARDLINE_MIN_THREADS")]
    pub min_threads: Option<usize>,
    /// Label request metrics per tenant model (bounded cardinality is then your choice).
    #[arg(long, env = "SHARDLINE_PER_MODEL_METRICS")]
    pub per_model_metrics: bool,
    /// Client connection limits (timeouts, head size, open connections, shutdown grace).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The gRPC front door (off unless --grpc-listen is given).
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcArgs,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub args: RouterArgs,
    pub id: String,
    pub prefix: Prefix,
    pub conn: ConnLimits,
}

impl RouterArgs {
    /// The token sent to workers: the first `--internal-token` lists.
    pub fn sent_token(&self) -> String {
        shardline_shared::wire::token_list(&self.internal_token)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Checks everything and reports every problem at once.
    pub fn validate(self) -> Result<RouterConfig, Vec<String>> {
        let mut errors = Vec::new();
        let prefix = Prefix::new(&self.prefix).map_err(|e| errors.push(format!("--prefix: {e}")));
        let id = self.id.clone().or_else(default_id).unwrap_or_default();
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            errors.push("--id must be 1 to 128 printable characters".into());
        }
        if self.etcd.iter().all(|e| e.trim().is_empty()) {
            errors.push("--etcd needs at least one endpoint".into());
        }
        if shardline_shared::wire::token_list(&self.internal_token)
            .iter()
            .any(|t| t.len() < 16)
        {
            errors.push("--internal-token: every token must be at least 16 characters".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            errors.push("--tls-cert and --tls-key go together".into());
        }
        if self.max_body < 1024 || self.max_batch_rows == 0 {
            errors.push("--max-body must be at least 1KiB and --max-batch-rows positive".into());
        }
        if !(1..=65_536).contains(&self.shadow_max_in_flight) {
            errors.push("--shadow-max-in-flight must be from 1 to 65536".into());
        }
        if self.max_inflight_bytes < self.max_body {
            errors.push(format!(
                "--max-inflight-bytes ({}) must be at least --max-body ({})",
                self.max_inflight_bytes, self.max_body
            ));
        }
        if self.default_deadline.is_zero()
            || self.attempt_timeout.is_zero()
            || self.max_deadline < self.default_deadline
        {
            errors.push(
                "--default-deadline and --attempt-timeout must be positive, and --max-deadline at least --default-deadline"
                    .into(),
            );
        }
        if self.retry_budget_percent > 100 || self.retry_window < Duration::from_secs(1) {
            errors.push(
                "--retry-budget-percent must be at most 100 and --retry-window at least 1s".into(),
            );
        }
        if self.controller_lease_ttl < Duration::from_secs(2) {
            errors.push("--controller-lease-ttl must be at least 2s".into());
        }
        if self.threads == Some(0) {
            errors.push("--threads must be positive".into());
        }
        if self.min_threads == Some(0) {
            errors.push("--min-threads must be positive".into());
        }
        if let (Some(min), Some(max)) = (self.min_threads, self.threads)
            && min > max
        {
            errors.push(format!("--min-threads {min} exceeds --threads {max}"));
        }
        self.grpc.validate(&mut errors);
        let conn = self.conn.validate(&mut errors);
        match (prefix, conn) {
            (Ok(prefix), Some(conn)) if errors.is_empty() => Ok(RouterConfig {
                args: self,
                id,
                prefix,
                conn,
            }),
            _ => Err(errors),
        }
    }
}

/// The host name (a pod name on Kubernetes), with this process's id: two routers on
/// one host still get distinct ids.
fn default_id() -> Option<String> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    Some(format!("{}-{}", host.trim(), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[(&str, &str)]) -> Result<RouterArgs, clap::Error> {
        let mut flags = vec![
            ("--etcd", "http://127.0.0.1:2379"),
            ("--internal-token", "0123456789abcdef"),
            ("--id", "r-1"),
        ];
        for (flag, value) in extra {
            flags.retain(|(f, _)| f != flag);
            flags.push((flag, value));
        }
        let argv = std::iter::once("router").chain(flags.iter().flat_map(|(f, v)| [*f, *v]));
        RouterArgs::try_parse_from(argv)
    }

    #[test]
    fn the_first_listed_internal_token_is_sent_and_tls_needs_both_files() {
        let c = args(&[(
            "--internal-token",
            "new-token-0123456789, old-token-0123456789",
        )])
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(c.args.sent_token(), "new-token-0123456789");
        let short = args(&[("--internal-token", "new-token-0123456789,short")]).unwrap();
        assert!(short.validate().is_err());
        let half = args(&[("--tls-cert", "/x.crt")]).unwrap();
        let errors = half.validate().unwrap_err().join(" ");
        assert!(errors.contains("--tls-cert and --tls-key"), "{errors}");
    }

    #[test]
    fn valid_config_with_defaults() {
        let c = args(&[]).unwrap().validate().unwrap();
        assert_eq!(c.args.default_deadline, Duration::from_secs(10));
        assert_eq!(c.args.max_body, 8 << 20);
        assert_eq!(c.args.max_inflight_bytes, 256 << 20);
        assert_eq!((c.args.shadow_max_in_flight, c.args.shadow_rate), (32, 200));
        assert_eq!(c.id, "r-1");
        assert_eq!(c.prefix.root(), "/shardline/");
        assert_eq!(c.args.max_balance_moves_per_minute, 60);
        assert_eq!(c.conn.header_timeout, Duration::from_secs(10));
        assert_eq!(c.conn.max_connections, 10_000);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errs = args(&[
            ("--prefix", "nope"),
            ("--internal-token", "short"),
            ("--max-deadline", "1s"),
            ("--threads", "0"),
            ("--min-threads", "0"),
            ("--header-timeout", "0s"),
            ("--max-inflight-bytes", "1MiB"),
            ("--shadow-max-in-flight", "0"),
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "--prefix",
            "--internal-token",
            "--max-deadline",
            "--threads must be positive",
            "--min-threads must be positive",
            "--header-timeout",
            "--max-inflight-bytes",
            "--shadow-max-in-flight",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn min_threads_at_most_threads() {
        let bad = args(&[("--threads", "2"), ("--min-threads", "3")])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            bad.join("\n")
                .contains("--min-threads 3 exceeds --threads 2")
        );
        assert!(
            args(&[("--threads", "2"), ("--min-threads", "2")])
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn balancing_can_be_turned_off_and_takes_a_count() {
        let off = args(&[("--max-balance-moves-per-minute", "0")]).unwrap();
        assert_eq!(off.validate().unwrap().args.max_balance_moves_per_minute, 0);
        let err = args(&[("--max-balance-moves-per-minute", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-balance-moves-per-minute"), "{err}");
    }

    #[test]
    fn bad_units_are_flag_errors() {
        let err = args(&[("--max-body", "huge")]).unwrap_err().to_string();
        assert!(err.contains("huge"), "{err}");
    }
}
