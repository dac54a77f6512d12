//! Client connection limits every Shardline server applies, whatever serves the
//! connection (the router's fast path, hyper for the router's other requests, hyper for
//! the worker): the flags ([`ConnArgs`], flattened into each binary's own), their
//! validated form ([`ConnLimits`]) and the pure rules derived from them (how long a body
//! may take, how many connections the descriptor limit allows).
//!
//! - `gate`: counting open connections against `--max-connections` ([`ConnGate`]), the
//!   descriptor budget read from `/proc/self/limits`, and the connection metrics;
//! - `io`: [`Guarded`], an I/O wrapper enforcing the read and write timeouts on a
//!   connection served by hyper, which has no timer of its own here;
//! - `serve`: serving one connection, or a whole listener, with hyper and an axum app
//!   under these limits (the worker's server, the router's hand-over).

mod gate;
mod io;
mod serve;

use std::time::Duration;

use clap::Args;
use shardline_shared::units::{parse_bytes, parse_duration};

pub use self::gate::{
    ConnGate, ConnMetrics, ConnSlot, Reason, descriptor_limit, max_connections_for, nofile_soft,
};
pub use self::io::{Guarded, Phase};
pub use self::serve::{
    BUSY, HyperConn, LISTEN_BACKLOG, accept, close_after_grace, listen, serve_app, serve_connection,
};

/// Connection limit flags, the same on the router and the worker (each with its
/// `SHARDLINE_*` variable).
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Longest a client may take to send a request head, from the connection's accept
    /// or the request's first byte (past it the connection is closed).
    #[arg(long, env = "SHARDLINE_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Time a request body may take beyond what --body-min-rate allows (the body must
    /// arrive within this plus one second per --body-min-rate bytes received; past it:
    /// 408 and the connection is closed).
    #[arg(long, env = "SHARDLINE_BODY_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub body_timeout: Duration,
    /// Slowest sustained rate at which a request body is read (bytes per second).
    #[arg(long, env = "SHARDLINE_BODY_MIN_RATE", value_parser = parse_bytes, default_value = "64KiB")]
    pub body_min_rate: u64,
    /// Longest a kept-alive connection may wait for its next request (then it is closed).
    #[arg(long, env = "SHARDLINE_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Longest an answer may wait to be written because the client does not read (then
    /// the connection is closed).
    #[arg(long, env = "SHARDLINE_WRITE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub write_timeout: Duration,
    /// Largest request head (request line and headers; past it: 431, then closed).
    #[arg(long, env = "SHARDLINE_MAX_HEADER_BYTES", value_parser = parse_bytes, default_value = "64KiB")]
    pub max_header_bytes: u64,
    /// Most header lines in a request head (past it: 431, then closed).
    #[arg(long, env = "SHARDLINE_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Most client connections open at once; past it a new connection is accepted and
    /// closed at once (with a best-effort 503). Lowered at start-up to what the
    /// descriptor limit (`ulimit -n`) allows while keeping as many descriptors for
    /// connections to workers, stores and etcd.
    #[arg(long, env = "SHARDLINE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// After SIGTERM, how long requests in flight may take before their connections are
    /// closed anyway.
    #[arg(long, env = "SHARDLINE_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
}

/// The validated connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub body_min_rate: u64,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl ConnLimits {
    /// These limits with `--max-connections` lowered to what this process's descriptor
    /// limit allows once `reserve` descriptors are set aside ([`max_connections_for`]),
    /// with a warning when it had to be lowered.
    pub fn fit_to_descriptors(mut self, reserve: u64) -> Self {
        let nofile = nofile_soft();
        let fit = max_connections_for(self.max_connections, nofile, reserve);
        if fit < self.max_connections {
            tracing::warn!(
                requested = self.max_connections,
                allowed = fit,
                nofile = ?nofile,
                "--max-connections lowered to fit the descriptor limit (raise ulimit -n)"
            );
            self.max_connections = fit;
        }
        self
    }
}

/// hyper reads heads into a buffer of at least this many bytes.
pub const MIN_HEADER_BYTES: u64 = 8 << 10;

impl ConnArgs {
    /// The limits, or each problem pushed onto `errors`.
    pub fn validate(&self, errors: &mut Vec<String>) -> Option<ConnLimits> {
        let before = errors.len();
        for (flag, d) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--write-timeout", self.write_timeout),
        ] {
            if d < Duration::from_millis(10) {
                errors.push(format!("{flag} must be at least 10ms"));
            }
        }
        if self.body_min_rate == 0 {
            errors.push("--body-min-rate must be positive".into());
        }
        if !(MIN_HEADER_BYTES..=(1 << 20)).contains(&self.max_header_bytes) {
            errors.push("--max-header-bytes must be between 8KiB and 1MiB".into());
        }
        if !(8..=1000).contains(&self.max_headers) {
            errors.push("--max-headers must be between 8 and 1000".into());
        }
        if self.max_connections == 0 {
            errors.push("--max-connections must be positive".into());
        }
        (errors.len() == before).then(|| ConnLimits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            body_min_rate: self.body_min_rate,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_headers: self.max_headers,
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

impl ConnLimits {
    /// How long after its start a body of which `received` bytes have arrived may still
    /// be read: `--body-timeout` plus one second per `--body-min-rate` bytes. A client
    /// sending at the minimum rate or faster never reaches it; one trickling at a
    /// fraction `f` of it is cut off after `body_timeout / (1 - f)`.
    pub fn body_allowance(&self, received: u64) -> Duration {
        let rate = self.body_min_rate.max(1);
        let nanos = u128::from(received % rate) * 1_000_000_000 / u128::from(rate);
        let extra = Duration::from_secs(received / rate)
            + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.body_timeout.saturating_add(extra)
    }

    /// Limits for tests: short timeouts, small counts.
    pub fn for_tests() -> Self {
        Self {
            header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(2),
            body_min_rate: 1024,
            idle_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_connections: 1000,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        conn: ConnArgs,
    }

    #[test]
    fn defaults_are_production_limits() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let limits = cli.conn.validate(&mut Vec::new()).unwrap();
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_header_bytes, 64 << 10);
        assert_eq!(limits.max_connections, 10_000);
    }

    #[test]
    fn every_problem_is_reported() {
        let cli = Cli::try_parse_from([
            "x",
            "--header-timeout",
            "0s",
            "--body-min-rate",
            "0",
            "--max-header-bytes",
            "1KiB",
            "--max-headers",
            "2",
            "--max-connections",
            "0",
        ])
        .unwrap();
        let mut errors = Vec::new();
        assert!(cli.conn.validate(&mut errors).is_none());
        let all = errors.join("\n");
        for flag in [
            "--header-timeout",
            "--body-min-rate",
            "--max-header-bytes",
            "--max-headers",
            "--max-connections",
        ] {
            assert!(all.contains(flag), "{flag} missing from {all}");
        }
    }

    proptest! {
        /// A body sent at the minimum rate or faster always has time left; the
        /// allowance grows with what arrived and never overflows.
        #[test]
        fn the_minimum_rate_always_has_time(
            rate in 1u64..u64::MAX,
            received in any::<u64>(),
            more in any::<u64>(),
            timeout_ms in 10u64..100_000,
        ) {
            let limits = ConnLimits {
                body_min_rate: rate,
                body_timeout: Duration::from_millis(timeout_ms),
                ..ConnLimits::for_tests()
            };
            let a = limits.body_allowance(received);
            prop_assert!(a >= limits.body_timeout);
            prop_assert!(limits.body_allowance(received.saturating_add(more)) >= a);
            // `received` bytes at exactly `rate` take received/rate seconds: within it.
            let at_rate = received as f64 / rate as f64;
            prop_assert!(a.as_secs_f64() + 1e-6 >= at_rate);
        }
    }
}
