//! What a `bench-scale` run saw, its targets, and how it prints (table, JSON, docs).

use std::time::Duration;

use serde::Serialize;

use super::super::docs;
use super::quality::Quality;
use crate::stats::{Summary, ms};

/// Targets of issue 16 on this machine.
pub const READY_TARGET_SECS: f64 = 10.0;
pub const RSS_TARGET_BYTES_PER_MODEL: f64 = 1024.0;
pub const CHANGE_TARGET_P99_MS: f64 = 500.0;

/// One timed `shardctl` listing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardctlTiming {
    pub command: String,
    pub secs: f64,
    /// Lines it printed (a table row each, plus its header).
    pub lines: usize,
}

/// How long a change took to show at every router, over all probes of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latencies {
    /// Every probe, in milliseconds, in the order run.
    pub all_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latencies {
    pub fn of(samples: &[Duration]) -> Self {
        let summary = Summary::of(samples);
        Self {
            all_ms: samples.iter().copied().map(ms).collect(),
            p50_ms: ms(summary.p50),
            p99_ms: ms(summary.p99),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    #[serde(skip)]
    pub header: String,
    pub tenants: usize,
    pub workers: usize,
    pub resident_keys: usize,
    pub populate_secs: f64,
    pub etcd_db_bytes: u64,
    pub etcd_db_bytes_end: u64,
    /// The router that watched every populating write: until it serves a generated tenant.
    pub watched_router_catch_up_secs: f64,
    pub new_router_ready_secs: f64,
    pub new_router_serves_secs: f64,
    pub new_worker_ready_secs: f64,
    pub shardctl: Vec<ShardctlTiming>,
    pub router_rss_kib: u64,
    pub empty_router_rss_kib: u64,
    /// Key rotation until every router accepts the new key.
    pub rotation: Latencies,
    /// Publication until every router routes the new model.
    pub publish: Latencies,
    /// r-0 (watched the population), r-1 (listed it at start): CPU seconds per second.
    pub router_cpu_share: [f64; 2],
    pub etcd_revisions_per_sec: f64,
    pub keep_alives_per_sec: f64,
    pub resident_writes_per_sec: f64,
    pub heartbeat_failures: u64,
    pub compaction_rotation_ms: f64,
    pub compaction_resyncs: f64,
    /// The last phase: the controller after tenant creations, joins and losses.
    pub quality: Quality,
}

impl Report {
    /// Router bytes per tenant-model over an empty router's.
    pub fn rss_bytes_per_model(&self) -> f64 {
        (self
            .router_rss_kib
            .saturating_sub(self.empty_router_rss_kib) as f64
            * 1024.0)
            / self.tenants.max(1) as f64
    }

    /// The targets missed, one line each.
    pub fn misses(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.new_router_serves_secs > READY_TARGET_SECS {
            m.push(format!(
                "a new router served after {:.1} s (target ≤ 10 s)",
                self.new_router_serves_secs
            ));
        }
        if self.new_worker_ready_secs > READY_TARGET_SECS {
            m.push(format!(
                "a new worker was ready after {:.1} s (target ≤ 10 s)",
                self.new_worker_ready_secs
            ));
        }
        for s in &self.shardctl {
            if s.secs > READY_TARGET_SECS {
                m.push(format!(
                    "shardctl {} took {:.1} s (target ≤ 10 s)",
                    s.command, s.secs
                ));
            }
        }
        if self.rss_bytes_per_model() > RSS_TARGET_BYTES_PER_MODEL {
            m.push(format!(
                "router RSS is {:.0} bytes per tenant-model (target ≤ 1 KiB)",
                self.rss_bytes_per_model()
            ));
        }
        for (what, p99) in [
            ("key rotation", self.rotation.p99_ms),
            ("publish-to-routable", self.publish.p99_ms),
        ] {
            if p99 > CHANGE_TARGET_P99_MS {
                m.push(format!("{what} p99 is {p99:.0} ms (target ≤ 500 ms)"));
            }
        }
        if self.compaction_resyncs < 1.0 {
            m.push("the router stopped across a compaction did not re-list".into());
        }
        m.extend(self.quality.misses());
        m
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The figures as Markdown rows (also the terminal table).
    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut rows = vec![
            (
                "tenants (one model each) × simulated workers".to_owned(),
                format!("{} × {}", self.tenants, self.workers),
            ),
            (
                "resident keys (one per model held)".into(),
                self.resident_keys.to_string(),
            ),
            (
                "populating etcd".into(),
                format!("{:.0} s", self.populate_secs),
            ),
            (
                "etcd data directory after populating / at the end".into(),
                format!(
                    "{:.0} / {:.0} MiB",
                    mib(self.etcd_db_bytes),
                    mib(self.etcd_db_bytes_end)
                ),
            ),
            (
                "router that watched the population: serves after".into(),
                format!("{:.1} s", self.watched_router_catch_up_secs),
            ),
            (
                "**new router: ready / first 200**".into(),
                format!(
                    "**{:.1} s / {:.1} s**",
                    self.new_router_ready_secs, self.new_router_serves_secs
                ),
            ),
            (
                "**new worker: registered and ready**".into(),
                format!("**{:.1} s**", self.new_worker_ready_secs),
            ),
        ];
        for s in &self.shardctl {
            rows.push((
                format!("`shardctl {}` ({} lines)", s.command, s.lines),
                format!("{:.1} s", s.secs),
            ));
        }
        rows.extend([
            (
                "router RSS: full / empty".into(),
                format!(
                    "{:.0} / {:.0} MiB",
                    self.router_rss_kib as f64 / 1024.0,
                    self.empty_router_rss_kib as f64 / 1024.0
                ),
            ),
            (
                "**router RSS per tenant-model over empty**".into(),
                format!("**{:.0} bytes**", self.rss_bytes_per_model()),
            ),
            (
                format!(
                    "**key rotation visible at both routers, p99 of {}**",
                    self.rotation.all_ms.len()
                ),
                format!(
                    "**{:.0} ms** (median {:.0})",
                    self.rotation.p99_ms, self.rotation.p50_ms
                ),
            ),
            (
                format!(
                    "**publish-to-routable at both routers, p99 of {}**",
                    self.publish.all_ms.len()
                ),
                format!(
                    "**{:.0} ms** (median {:.0})",
                    self.publish.p99_ms, self.publish.p50_ms
                ),
            ),
            (
                "router CPU on control-plane updates (share of one core), r-0 / r-1".into(),
                format!(
                    "{:.3} / {:.3}",
                    self.router_cpu_share[0], self.router_cpu_share[1]
                ),
            ),
            (
                "etcd revisions (writes) per second during that window".into(),
                format!("{:.0}", self.etcd_revisions_per_sec),
            ),
            (
                "simulated lease keep-alives / resident writes per second".into(),
                format!(
                    "{:.0} / {:.0} ({} failed up to the quality phase)",
                    self.keep_alives_per_sec, self.resident_writes_per_sec, self.heartbeat_failures
                ),
            ),
            (
                "compaction while a router was stopped: its re-lists / rotation visible after"
                    .into(),
                format!(
                    "{:.0} / {:.0} ms",
                    self.compaction_resyncs, self.compaction_rotation_ms
                ),
            ),
        ]);
        rows.extend(self.quality.rows());
        let mut out = String::from("| Measure | Value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }

    /// The docs section: header, table, verdict.
    pub fn docs(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.header,
            self.table(),
            docs::verdict(&self.misses(), "Every target met.")
        )
    }
}
