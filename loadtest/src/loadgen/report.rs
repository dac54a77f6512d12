//! What a load run saw: each finished request becomes a [`Record`], a [`Recorder`] folds
//! them (no I/O, so it is tested on made-up records), and [`Report`] prints the result as a
//! table or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::{Mix, Mode};
use crate::client::keep_error;
use crate::protocol::Protocol;
use crate::stats::{Histogram, ms};

/// How many tenants the report lists (the busiest first).
const LISTED_TENANTS: usize = 10;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 200 answer, read in full.
    Ok,
    /// Any other status, with the start of the answer's body.
    Status(u16, String),
    /// No connection could be opened (e.g. refused).
    Connect(String),
    /// The connection failed while sending or reading.
    Transport(String),
    /// No answer by the request's deadline (counted from its intended send time in open
    /// loop).
    Timeout,
}

impl Outcome {
    /// The error column this outcome counts in; `None` for success.
    fn error_label(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Status(code, _) => Some(code.to_string()),
            Self::Connect(_) => Some("connect".to_owned()),
            Self::Transport(_) => Some("transport".to_owned()),
            Self::Timeout => Some("timeout".to_owned()),
        }
    }

    fn message(&self) -> Option<String> {
        match self {
            Self::Ok | Self::Timeout => None,
            Self::Status(code, body) => Some(format!("{code}: {body}")),
            Self::Connect(e) => Some(format!("connect: {e}")),
            Self::Transport(e) => Some(e.clone()),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Index into the keys file's tenants.
    pub tenant: usize,
    /// From the intended send time (open loop) or the actual one (closed loop) to the
    /// answer's last byte or the failure.
    pub latency: Duration,
    /// When it finished, since the start of the run.
    pub finished: Duration,
    pub outcome: Outcome,
}

/// What was run: the options as resolved (the input from the model's metadata or the
/// defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub mode: Mode,
    pub mix: Mix,
    pub duration: Duration,
    pub batch: usize,
    pub features: usize,
    pub input: String,
    /// The request encoding (`--protocol`).
    pub protocol: Protocol,
    /// Why the defaults stand in for the model's metadata, when they do.
    pub metadata_error: Option<String>,
    /// Tenant names in keys-file order.
    pub tenants: Vec<String>,
}

/// Folds [`Record`]s into a [`Report`].
#[derive(Debug, Clone)]
pub struct Recorder {
    latencies: Histogram,
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    error_messages: Vec<String>,
    /// (requests, ok) per tenant index.
    per_tenant: Vec<(u64, u64)>,
    last_finished: Duration,
}

impl Recorder {
    pub fn new(tenants: usize) -> Self {
        Self {
            latencies: Histogram::new(),
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            error_messages: Vec::new(),
            per_tenant: vec![(0, 0); tenants],
            last_finished: Duration::ZERO,
        }
    }

    pub fn record(&mut self, r: Record) {
        self.requests += 1;
        self.last_finished = self.last_finished.max(r.finished);
        let ok = r.outcome == Outcome::Ok;
        if let Some(t) = self.per_tenant.get_mut(r.tenant) {
            t.0 += 1;
            t.1 += u64::from(ok);
        }
        if ok {
            self.ok += 1;
            self.latencies.record(r.latency);
        }
        if let Some(label) = r.outcome.error_label() {
            *self.errors.entry(label).or_default() += 1;
        }
        if let Some(m) = r.outcome.message() {
            keep_error(&mut self.error_messages, m);
        }
    }

    /// The report; `elapsed` runs from the start to the last answer (at least the
    /// configured duration).
    pub fn finish(self, setup: Setup, connections: u64) -> Report {
        let mut tenants: Vec<TenantCount> = self
            .per_tenant
            .iter()
            .zip(&setup.tenants)
            .filter(|((requests, _), _)| *requests > 0)
            .map(|(&(requests, ok), name)| TenantCount {
                tenant: name.clone(),
                requests,
                ok,
            })
            .collect();
        let tenants_seen = tenants.len();
        // Stable: ties keep keys-file order.
        tenants.sort_by_key(|t| std::cmp::Reverse(t.requests));
        let h = &self.latencies;
        Report {
            elapsed: self.last_finished.max(setup.duration),
            setup,
            requests: self.requests,
            ok: self.ok,
            errors: self.errors,
            error_messages: self.error_messages,
            latency: Latency {
                p50: h.quantile(0.50),
                p90: h.quantile(0.90),
                p95: h.quantile(0.95),
                p99: h.quantile(0.99),
                p999: h.quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            },
            connections,
            tenants_seen,
            busiest: tenants,
        }
    }
}

/// Latency percentiles of the 200 answers (nearest rank, 0.1 % precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// Requests sent to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCount {
    pub tenant: String,
    pub requests: u64,
    pub ok: u64,
}

/// The result of one load run.
#[derive(Debug, Clone)]
pub struct Report {
    pub setup: Setup,
    /// From the start to the last answer: the schedule plus the time to drain what was
    /// still queued or in flight.
    pub elapsed: Duration,
    /// Requests finished (answered, failed or timed out).
    pub requests: u64,
    /// 200 answers.
    pub ok: u64,
    /// Failures by HTTP status code, `connect`, `transport` or `timeout`.
    pub errors: BTreeMap<String, u64>,
    /// A few distinct failure messages.
    pub error_messages: Vec<String>,
    pub latency: Latency,
    /// Connections opened, reconnects included.
    pub connections: u64,
    /// Tenants that were sent at least one request.
    pub tenants_seen: usize,
    /// Every tenant sent a request, the busiest first (the table and JSON list the
    /// first ten).
    pub busiest: Vec<TenantCount>,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// 200 answers per second of [`Report::elapsed`].
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    pub fn table(&self) -> String {
        let s = &self.setup;
        let l = &self.latency;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}, {} for {:?}, batch {} × {} features (input {:?}, {}), {} tenants",
            s.mode,
            s.mix,
            s.duration,
            s.batch,
            s.features,
            s.input,
            s.protocol.name(),
            s.tenants.len(),
        );
        if let Some(e) = &s.metadata_error {
            let _ = writeln!(out, "model metadata unavailable, defaults used: {e}");
        }
        out += "\n| requests | ok | errors | elapsed (s) | ok/s | connections |\n";
        out += "|---|---|---|---|---|---|\n";
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.1} | {} |",
            self.requests,
            self.ok,
            self.error_count(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.connections,
        );
        out += "\n| latency (ms) | p50 | p90 | p95 | p99 | p99.9 | max | mean |\n";
        out += "|---|---|---|---|---|---|---|---|\n";
        let _ = writeln!(
            out,
            "| ok answers | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            ms(l.mean),
        );
        if !self.errors.is_empty() {
            out += "\n| error | count |\n|---|---|\n";
            for (label, n) in &self.errors {
                let _ = writeln!(out, "| {label} | {n} |");
            }
            for m in &self.error_messages {
                let _ = writeln!(out, "e.g. {m}");
            }
        }
        let _ = writeln!(
            out,
            "\n| tenant (busiest {} of {} seen) | requests | ok |\n|---|---|---|",
            self.busiest.len().min(LISTED_TENANTS),
            self.tenants_seen
        );
        for t in self.busiest.iter().take(LISTED_TENANTS) {
            let _ = writeln!(out, "| {} | {} | {} |", t.tenant, t.requests, t.ok);
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let s = &self.setup;
        let l = &self.latency;
        let (rate, connections) = match s.mode {
            Mode::Open { rate, connections } => (Some(rate), connections),
            Mode::Closed { concurrency } => (None, concurrency),
        };
        json!({
            "mode": s.mode.name(),
            "rate": rate,
            "connections": connections,
            "zipf_exponent": s.mix.exponent(),
            "duration_s": s.duration.as_secs_f64(),
            "batch": s.batch,
            "features": s.features,
            "input": s.input,
            "protocol": s.protocol.name(),
            "metadata_error": s.metadata_error,
            "tenants": s.tenants.len(),
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "error_messages": self.error_messages,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput": self.throughput(),
            "connections_opened": self.connections,
            "latency_ms": {
                "p50": ms(l.p50),
                "p90": ms(l.p90),
                "p95": ms(l.p95),
                "p99": ms(l.p99),
                "p99_9": ms(l.p999),
                "max": ms(l.max),
                "mean": ms(l.mean),
            },
            "tenants_seen": self.tenants_seen,
            "busiest_tenants": self.busiest.iter().take(LISTED_TENANTS).map(|t| json!({
                "tenant": t.tenant, "requests": t.requests, "ok": t.ok,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(tenants: usize) -> Setup {
        Setup {
            mode: Mode::Open {
                rate: 10.0,
                connections: 4,
            },
            mix: Mix::Zipf(1.1),
            duration: Duration::from_secs(1),
            batch: 1,
            features: 64,
            input: "features".to_owned(),
            protocol: Protocol::HttpJson,
            metadata_error: None,
            tenants: (0..tenants).map(|i| format!("t{i}")).collect(),
        }
    }

    fn record(tenant: usize, ms: u64, outcome: Outcome) -> Record {
        Record {
            tenant,
            latency: Duration::from_millis(ms),
            finished: Duration::from_millis(1000 + ms),
            outcome,
        }
    }

    #[test]
    fn counts_errors_by_kind_and_latency_of_ok_only() {
        let mut r = Recorder::new(3);
        for i in 1..=100 {
            r.record(record(0, i, Outcome::Ok));
        }
        r.record(record(1, 5_000, Outcome::Status(401, "bad key".into())));
        r.record(record(1, 1, Outcome::Connect("refused".into())));
        r.record(record(1, 1, Outcome::Connect("refused".into())));
        r.record(record(2, 9_000, Outcome::Timeout));
        let report = r.finish(setup(3), 7);
        assert_eq!(
            (report.requests, report.ok, report.error_count()),
            (104, 100, 4)
        );
        let errors: Vec<_> = report
            .errors
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(errors, [("401", 1), ("connect", 2), ("timeout", 1)]);
        assert_eq!(report.error_messages, ["401: bad key", "connect: refused"]);
        // Only the 200s are in the histogram: p99 of 1..=100 ms, not the 9 s timeout.
        let p99 = report.latency.p99;
        assert!(p99 >= Duration::from_millis(99) && p99 < Duration::from_millis(100));
        assert_eq!(report.elapsed, Duration::from_millis(10_000));
        assert!((report.throughput() - 10.0).abs() < 1e-9);
        assert_eq!(report.tenants_seen, 3);
        assert_eq!(report.busiest[0].tenant, "t0");
        assert_eq!((report.busiest[1].requests, report.busiest[1].ok), (3, 0));
        let json = report.json();
        assert_eq!(json["errors"]["connect"], 2);
        assert_eq!(json["mode"], "open-loop");
        assert!(report.table().contains("| connect | 2 |"));
    }

    #[test]
    fn every_tenant_is_counted_and_the_table_lists_the_busiest_ten() {
        let mut r = Recorder::new(12);
        for t in 0..12 {
            for i in 0..=t {
                r.record(record(t, i as u64 + 1, Outcome::Ok));
            }
        }
        let report = r.finish(setup(12), 1);
        assert_eq!(
            report.busiest.len(),
            12,
            "the demo's per-tenant table needs them all"
        );
        assert_eq!(report.busiest[0].tenant, "t11");
        assert_eq!(report.busiest[11].requests, 1);
        assert!(report.table().contains("busiest 10 of 12 seen"));
        assert!(report.table().contains("| t2 | 3 | 3 |"));
        assert!(!report.table().contains("| t1 | 2 | 2 |"));
        assert_eq!(
            report.json()["busiest_tenants"].as_array().unwrap().len(),
            10
        );
    }

    #[test]
    fn empty_run_reports_the_configured_duration() {
        let report = Recorder::new(2).finish(setup(2), 0);
        assert_eq!(report.elapsed, Duration::from_secs(1));
        assert_eq!((report.requests, report.tenants_seen), (0, 0));
        assert_eq!(report.throughput(), 0.0);
        assert_eq!(report.latency.max, Duration::ZERO);
    }
}
