//! What a `bench-churn` run saw ([`Report`], one [`Phase`] each for warm and churn, with
//! the worker's [`WorkerCounters`] read from its metrics), its target and ratios, and its
//! table, JSON and docs section. Pure: no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use shardline_shared::metrics::{WORKER_EVICTIONS_TOTAL, WORKER_MODEL_LOADS_TOTAL};
use shardline_testkit::metric_sum;

use super::{MIB, Options, rss_limit};
use crate::bench::docs;
use crate::loadgen::report::Report as LoadReport;

/// One phase's load and what the worker did meanwhile.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub tenants: usize,
    pub load: LoadReport,
    pub worker: WorkerCounters,
    /// Highest sampled `VmRSS` during the phase.
    pub peak_rss: u64,
    pub samples: u64,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub header: String,
    pub model_bytes: u64,
    pub dims: Vec<usize>,
    pub budget: u64,
    /// What the worker reported as its capacity.
    pub capacity: f64,
    pub warm: Phase,
    pub churn: Phase,
    /// The worker's `VmHWM` at the end (its peak RSS since it started).
    pub hwm: u64,
}

impl Report {
    pub fn rss_limit(&self) -> u64 {
        rss_limit(self.budget)
    }
    /// The highest RSS seen: sampled, or the kernel's high-water mark.
    pub fn peak_rss(&self) -> u64 {
        self.hwm.max(self.warm.peak_rss).max(self.churn.peak_rss)
    }
    pub fn throughput_ratio(&self) -> f64 {
        self.churn.load.throughput() / self.warm.load.throughput().max(1e-9)
    }
    pub fn p99_ratio(&self) -> f64 {
        self.churn.load.latency.p99.as_secs_f64()
            / self.warm.load.latency.p99.as_secs_f64().max(1e-9)
    }

    /// Missed targets, one line each.
    pub fn misses(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.peak_rss() > self.rss_limit() {
            m.push(format!(
                "target missed: peak RSS {} > budget × 1.1 + 64 MiB = {}",
                mib(self.peak_rss()),
                mib(self.rss_limit())
            ));
        }
        for p in [&self.warm, &self.churn] {
            if p.load.error_count() > 0 {
                m.push(format!(
                    "target missed: {} failed requests in the {} phase ({:?})",
                    p.load.error_count(),
                    p.name,
                    p.load.errors
                ));
            }
        }
        if self.churn.worker.loads <= self.churn.load.ok as f64 / 10.0 {
            m.push(format!(
                "not a churn test: only {} loads for {} answers",
                self.churn.worker.loads, self.churn.load.ok
            ));
        }
        m
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        s += "| Phase | tenants (models) | req/s | p50 (ms) | p99 (ms) | errors | cold loads | evictions (memory) | failed loads | peak VmRSS (MiB) |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        for p in [&self.warm, &self.churn] {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                p.name,
                p.tenants,
                p.load.throughput(),
                ms(p.load.latency.p50),
                ms(p.load.latency.p99),
                p.load.error_count(),
                p.worker.loads,
                p.worker.evictions_memory,
                p.worker.load_failures,
                p.peak_rss as f64 / MIB as f64,
            );
        }
        s += "\n| Measure | Value |\n|---|---|\n";
        let _ = writeln!(
            s,
            "| model | {} ({:.1} MiB resident) |",
            self.dims
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" → "),
            self.model_bytes as f64 / MIB as f64
        );
        let _ = writeln!(
            s,
            "| worker `--memory-budget` | {} ({} models + one load in flight; worker reports capacity {}) |",
            mib(self.budget),
            self.options.fit,
            mib(self.capacity as u64)
        );
        let _ = writeln!(
            s,
            "| RSS limit (budget × 1.1 + 64 MiB) | {} |",
            mib(self.rss_limit())
        );
        let _ = writeln!(
            s,
            "| peak RSS (max of `VmHWM`, {} samples of `VmRSS`) | {} (`VmHWM` {}) |",
            self.warm.samples + self.churn.samples,
            mib(self.peak_rss()),
            mib(self.hwm)
        );
        let _ = writeln!(
            s,
            "| peak RSS ÷ limit | {:.3} |",
            self.peak_rss() as f64 / self.rss_limit() as f64
        );
        let _ = writeln!(
            s,
            "| churn ÷ warm throughput | {:.3} |",
            self.throughput_ratio()
        );
        let _ = writeln!(s, "| churn ÷ warm p99 | {:.2} |", self.p99_ratio());
        s
    }

    /// The generated part of the docs section ([`DOCS`](super::DOCS)).
    pub fn docs(&self) -> String {
        let mut s = self.header.clone();
        s += "\n";
        s += &self.table();
        s += "\n";
        s += &docs::verdict(
            &self.misses(),
            "Target met: the worker's peak RSS stayed within budget × 1.1 + 64 MiB and no request failed.",
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let phase = |p: &Phase| {
            serde_json::json!({
                "tenants": p.tenants,
                "load": p.load.json(),
                "worker": {
                    "loads": p.worker.loads, "load_failures": p.worker.load_failures,
                    "evictions_memory": p.worker.evictions_memory,
                    "evictions_idle": p.worker.evictions_idle,
                },
                "peak_rss_bytes": p.peak_rss, "rss_samples": p.samples,
            })
        };
        let o = &self.options;
        serde_json::json!({
            "benchmark": "churn",
            "header": self.header.trim_end(),
            "options": {
                "fit": o.fit, "factor": o.factor, "size_mb": o.size_mb,
                "concurrency": o.concurrency, "warm_s": o.warm.as_secs_f64(),
                "churn_s": o.churn.as_secs_f64(),
            },
            "model_bytes": self.model_bytes, "dims": self.dims,
            "budget_bytes": self.budget, "capacity_bytes": self.capacity,
            "rss_limit_bytes": self.rss_limit(), "hwm_bytes": self.hwm,
            "peak_rss_bytes": self.peak_rss(),
            "warm": phase(&self.warm), "churn": phase(&self.churn),
            "ratios": {
                "throughput_churn_over_warm": self.throughput_ratio(),
                "p99_churn_over_warm": self.p99_ratio(),
                "peak_rss_over_limit": self.peak_rss() as f64 / self.rss_limit() as f64,
            },
            "met": self.misses().is_empty(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The worker's counters that a phase moves.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerCounters {
    pub loads: f64,
    pub load_failures: f64,
    pub evictions_memory: f64,
    pub evictions_idle: f64,
}

impl WorkerCounters {
    pub(super) fn from_metrics(text: &str) -> Self {
        Self {
            loads: metric_sum(text, WORKER_MODEL_LOADS_TOTAL, Some(("result", "ok"))),
            load_failures: metric_sum(text, WORKER_MODEL_LOADS_TOTAL, None)
                - metric_sum(text, WORKER_MODEL_LOADS_TOTAL, Some(("result", "ok"))),
            evictions_memory: metric_sum(text, WORKER_EVICTIONS_TOTAL, Some(("reason", "memory"))),
            evictions_idle: metric_sum(text, WORKER_EVICTIONS_TOTAL, Some(("reason", "idle"))),
        }
    }

    pub(super) fn minus(&self, before: &Self) -> Self {
        Self {
            loads: self.loads - before.loads,
            load_failures: self.load_failures - before.load_failures,
            evictions_memory: self.evictions_memory - before.evictions_memory,
            evictions_idle: self.evictions_idle - before.evictions_idle,
        }
    }
}
