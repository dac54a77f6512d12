//! What `bench-mlserver` measured and how it is told: per-round figures of both targets,
//! the paired ratios and the memory footprints against the targets, as Markdown
//! tables, the docs section and one JSON object. Pure: no I/O.
//!
//! This module holds the figures; `render` prints them as tables, the docs section and
//! JSON.

mod render;

use std::collections::BTreeMap;

use super::sklearn::TrainInfo;
use super::{Options, Target};
use crate::bench::load::Measured;
use crate::procfs::Footprint;
use crate::stats::{median, ms, ratio};

/// Target: Shardline's throughput at least this many times MLServer's.
pub const THROUGHPUT_TARGET: f64 = 10.0;
/// Target: MLServer's RSS at least this many times the Shardline worker's.
pub const RSS_TARGET: f64 = 10.0;

/// CPU seconds used during one measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// The server side: the worker and the router, or MLServer's whole process tree.
    pub server: f64,
    /// Of which the router (zero for MLServer).
    pub router: f64,
    /// This process (the load client).
    pub client: f64,
    /// Every process on the machine.
    pub machine: f64,
}

/// One target, one round.
#[derive(Debug, Clone)]
pub struct Run {
    pub load: Measured,
    pub cpu: Cpu,
    /// At the window's end: the Shardline worker, or MLServer's whole tree.
    pub memory: Footprint,
    /// At the window's end: the router (Shardline only).
    pub router_memory: Option<Footprint>,
}

impl Run {
    /// CPU microseconds per answered request.
    pub fn cpu_us(&self, seconds: f64) -> f64 {
        self.load.cpu_us(seconds)
    }

    /// Cores busy with work none of the benchmark's processes account for.
    pub fn other_cores(&self) -> f64 {
        let c = &self.cpu;
        self.load.cores((c.machine - c.server - c.client).max(0.0))
    }
}

/// Shardline's scores next to MLServer's for the same rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub rows: usize,
    /// The largest |Shardline − MLServer|.
    pub max_abs: f64,
    /// `max_abs` ÷ the largest |MLServer score|.
    pub relative: f64,
}

impl Agreement {
    /// Compares two score vectors; `None` when their lengths differ or MLServer's are all
    /// zero.
    pub fn of(shardline: &[f64], mlserver: &[f64]) -> Option<Self> {
        if shardline.len() != mlserver.len() || shardline.is_empty() {
            return None;
        }
        let max_abs = shardline
            .iter()
            .zip(mlserver)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let scale = mlserver.iter().map(|v| v.abs()).fold(0.0, f64::max);
        (scale > 0.0).then(|| Self {
            rows: mlserver.len(),
            max_abs,
            relative: max_abs / scale,
        })
    }
}

/// The model both serve.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub tenant: String,
    pub dims: Vec<usize>,
    pub train: TrainInfo,
    /// AUC of the scores on held-out events of the tenant.
    pub auc: Option<f64>,
    pub auc_rows: usize,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub machine: String,
    pub date: String,
    /// Package → version, as the training script found them in the peer's venv.
    pub versions: BTreeMap<String, String>,
    pub model: ModelInfo,
    pub agreement: Agreement,
    pub mlserver: Vec<Run>,
    pub shardline: Vec<Run>,
    pub mlserver_grpc: Vec<Run>,
    pub shardline_grpc: Vec<Run>,
}

impl Report {
    pub fn runs(&self, t: Target) -> &[Run] {
        match t {
            Target::MlServer => &self.mlserver,
            Target::Shardline => &self.shardline,
            Target::MlServerGrpc => &self.mlserver_grpc,
            Target::ShardlineGrpc => &self.shardline_grpc,
        }
    }

    /// Shardline's gRPC throughput ÷ MLServer's gRPC throughput, paired by round.
    pub fn grpc_throughput_ratio(&self) -> f64 {
        median(
            self.shardline_grpc
                .iter()
                .zip(&self.mlserver_grpc)
                .map(|(s, m)| ratio(s.load.throughput, m.load.throughput)),
        )
    }

    fn med(&self, t: Target, figure: impl Fn(&Run) -> f64) -> f64 {
        median(self.runs(t).iter().map(figure))
    }

    /// Median of the rounds' `Shardline ÷ MLServer` for `figure` (each round's pair was
    /// measured next to each other).
    fn paired(&self, figure: impl Fn(&Run) -> f64) -> f64 {
        median(
            self.shardline
                .iter()
                .zip(&self.mlserver)
                .map(|(s, m)| ratio(figure(s), figure(m))),
        )
    }

    /// Shardline's throughput ÷ MLServer's (target ≥ [`THROUGHPUT_TARGET`]).
    pub fn throughput_ratio(&self) -> f64 {
        self.paired(|r| r.load.throughput)
    }

    /// Shardline's p99 ÷ MLServer's (target < 1).
    pub fn p99_ratio(&self) -> f64 {
        self.paired(|r| ms(r.load.latency.p99))
    }

    /// The largest footprint seen at the end of `t`'s windows.
    pub fn memory(&self, t: Target) -> Footprint {
        self.runs(t)
            .iter()
            .fold(Footprint::default(), |a, r| a.max(r.memory))
    }

    /// The router's largest footprint.
    pub fn router_memory(&self) -> Footprint {
        self.shardline
            .iter()
            .filter_map(|r| r.router_memory)
            .fold(Footprint::default(), Footprint::max)
    }

    /// MLServer's RSS ÷ the worker's (target ≥ [`RSS_TARGET`]).
    pub fn rss_ratio(&self) -> f64 {
        let (m, w) = (
            self.memory(Target::MlServer),
            self.memory(Target::Shardline),
        );
        ratio(m.rss_kib as f64, w.rss_kib as f64)
    }

    /// MLServer's PSS ÷ the worker's (shared pages counted once).
    pub fn pss_ratio(&self) -> f64 {
        let (m, w) = (
            self.memory(Target::MlServer),
            self.memory(Target::Shardline),
        );
        ratio(m.pss_kib as f64, w.pss_kib as f64)
    }

    /// MLServer's RSS ÷ the worker's and the router's together.
    pub fn rss_ratio_with_router(&self) -> f64 {
        let m = self.memory(Target::MlServer);
        let ours = self.memory(Target::Shardline).plus(self.router_memory());
        ratio(m.rss_kib as f64, ours.rss_kib as f64)
    }

    /// One line per missed target.
    pub fn misses(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = self.throughput_ratio();
        if t < THROUGHPUT_TARGET {
            out.push(format!(
                "target missed: Shardline ÷ MLServer throughput {t:.2} < {THROUGHPUT_TARGET}"
            ));
        }
        let p = self.p99_ratio();
        if p >= 1.0 {
            out.push(format!(
                "target missed: Shardline p99 ÷ MLServer p99 {p:.3} ≥ 1"
            ));
        }
        let r = self.rss_ratio();
        if r < RSS_TARGET {
            out.push(format!(
                "target missed: MLServer RSS ÷ worker RSS {r:.2} < {RSS_TARGET}"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(throughput: f64, p99_ms: u64, rss_kib: u64) -> Run {
        Run {
            load: Measured {
                window: Duration::from_secs(2),
                ..Measured::fixture(throughput, Duration::from_millis(p99_ms))
            },
            cpu: Cpu {
                server: 1.0,
                router: 0.25,
                client: 0.5,
                machine: 2.0,
            },
            memory: Footprint {
                rss_kib,
                pss_kib: rss_kib / 2,
                processes: 1,
            },
            router_memory: None,
        }
    }

    fn report(mlserver: Vec<Run>, shardline: Vec<Run>) -> Report {
        Report {
            options: Options::default(),
            machine: "2 cores".into(),
            date: "2026-11-29".into(),
            versions: BTreeMap::from([("mlserver".into(), "1.7.1".into())]),
            model: ModelInfo {
                tenant: "bank-0".into(),
                dims: vec![64, 256, 256, 1],
                train: TrainInfo::default(),
                auc: Some(0.8),
                auc_rows: 100,
            },
            agreement: Agreement::of(&[1.0, 0.5], &[1.0001, 0.5]).expect("comparable"),
            mlserver_grpc: vec![run(4000.0, 10, 200_000), run(3000.0, 12, 200_000)],
            shardline_grpc: vec![run(10000.0, 2, 20_000), run(9000.0, 2, 20_000)],
            mlserver,
            shardline,
        }
    }

    #[test]
    fn ratios_pair_rounds_and_memory_takes_the_peak() {
        // The machine slows down in round 2; the per-round ratio does not notice.
        let r = report(
            vec![
                run(500.0, 80, 200_000),
                run(250.0, 160, 220_000),
                run(500.0, 80, 210_000),
            ],
            vec![
                run(6000.0, 8, 20_000),
                run(2900.0, 16, 18_000),
                run(5500.0, 9, 19_000),
            ],
        );
        assert!((r.throughput_ratio() - 11.6).abs() < 1e-9);
        assert!((r.p99_ratio() - 0.1).abs() < 1e-9);
        assert_eq!(r.memory(Target::MlServer).rss_kib, 220_000);
        assert_eq!(r.memory(Target::Shardline).rss_kib, 20_000);
        assert!((r.rss_ratio() - 11.0).abs() < 1e-9);
        assert!(r.misses().is_empty(), "{:?}", r.misses());
        // 2 s × 6000 req/s, 1 s of CPU.
        assert!((r.shardline[0].cpu_us(1.0) - 1e6 / 12_000.0).abs() < 1e-9);
        assert!((r.shardline[0].other_cores() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn grpc_targets_are_paired_with_each_other_and_shown() {
        let r = report(vec![run(5000.0, 8, 300_000)], vec![run(9000.0, 3, 30_000)]);
        // 10000 ÷ 4000 and 9000 ÷ 3000: the median of 2.5 and 3.0.
        assert!((r.grpc_throughput_ratio() - 2.75).abs() < 1e-9);
        let table = r.table();
        assert!(
            table.contains("| MLServer gRPC (direct) | 3500 |"),
            "{table}"
        );
        assert!(
            table.contains("| Shardline ÷ MLServer throughput over gRPC | — | 2.75 |"),
            "{table}"
        );
        assert_eq!(
            r.json()["shardline_grpc"]["rounds"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn missed_targets_are_reported_each() {
        let r = report(
            vec![run(1000.0, 10, 100_000)],
            vec![run(5000.0, 12, 20_000)],
        );
        let misses = r.misses();
        assert_eq!(misses.len(), 3, "{misses:?}");
        assert!(misses[0].contains("throughput 5.00"));
        assert!(misses[1].contains("p99"));
        assert!(misses[2].contains("RSS ÷ worker RSS 5.00"));
        let docs = r.docs();
        assert!(
            docs.contains("MLServer 1.7.1") && docs.contains("| missed |"),
            "{docs}"
        );
        assert_eq!(r.json()["ratios"]["rss"], 5.0);
    }

    #[test]
    fn agreement_is_relative_to_the_largest_score() {
        let a = Agreement::of(&[0.5, -2.0, 0.1], &[0.5, -2.0002, 0.1001]).expect("same length");
        assert!((a.max_abs - 2e-4).abs() < 1e-12);
        assert!((a.relative - 2e-4 / 2.0002).abs() < 1e-12);
        assert_eq!(a.rows, 3);
        assert!(Agreement::of(&[1.0], &[1.0, 2.0]).is_none());
        assert!(Agreement::of(&[1.0], &[0.0]).is_none());
    }
}
