//! The benchmark's results: per target, model and round, the medians and paired ratios
//! over rounds, and their table, JSON object and docs section.

use std::fmt::Write as _;

use super::{GRPC_TARGET, Options, Target};
use crate::bench::load::Measured;
use crate::stats::{median, ms, ratio};

/// CPU seconds used during one measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub worker: f64,
    /// The router, or nginx (master and workers); zero for direct.
    pub proxy: f64,
    /// This process (the load client, plus the idle orchestration).
    pub client: f64,
    /// Every process on the machine (busy time of all cores).
    pub machine: f64,
    /// etcd (idle, but on the same cores).
    pub etcd: f64,
}

impl Cpu {
    /// Busy time on the machine that none of the benchmark's processes account for.
    pub fn others(&self) -> f64 {
        (self.machine - self.worker - self.proxy - self.client - self.etcd).max(0.0)
    }
}

/// One target, one model, one round.
#[derive(Debug, Clone)]
pub struct Run {
    pub load: Measured,
    pub cpu: Cpu,
    /// For the router: its serving threads taking connections at the end of the window
    /// (`shardline_router_serving_threads_active`).
    pub router_threads: Option<f64>,
}

/// A target's rounds for one model, and their medians.
#[derive(Debug, Clone)]
pub struct TargetResult {
    pub target: Target,
    pub runs: Vec<Run>,
}

impl TargetResult {
    pub fn throughput(&self) -> f64 {
        median(self.runs.iter().map(|r| r.load.throughput))
    }
    pub fn p50(&self) -> f64 {
        median(self.runs.iter().map(|r| ms(r.load.latency.p50)))
    }
    pub fn p99(&self) -> f64 {
        median(self.runs.iter().map(|r| ms(r.load.latency.p99)))
    }
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.load.errors).sum()
    }
    /// Median CPU µs per request of one component.
    pub fn cpu_us(&self, pick: impl Fn(&Cpu) -> f64) -> f64 {
        median(self.runs.iter().map(|r| r.load.cpu_us(pick(&r.cpu))))
    }
    /// Median of the cores busy with other work during the windows.
    pub fn other_cores(&self) -> f64 {
        median(self.runs.iter().map(|r| r.load.cores(r.cpu.others())))
    }
}

/// One model's results.
#[derive(Debug, Clone)]
pub struct ModelResult {
    pub name: String,
    pub dims: Vec<usize>,
    pub targets: Vec<TargetResult>,
}

impl ModelResult {
    pub fn get(&self, t: Target) -> &TargetResult {
        self.targets
            .iter()
            .find(|r| r.target == t)
            .unwrap_or_else(|| unreachable!("every target is measured"))
    }
    /// `t` throughput ÷ direct throughput in each round (the same round's direct run,
    /// measured next to it, is the baseline).
    pub fn round_throughput_ratios(&self, t: Target) -> Vec<f64> {
        self.paired(t, |r| r.load.throughput)
    }
    /// `t` throughput ÷ direct throughput: the median of the rounds' ratios.
    pub fn throughput_ratio(&self, t: Target) -> f64 {
        median(self.round_throughput_ratios(t).into_iter())
    }
    /// `t` p99 ÷ direct p99: the median of the rounds' ratios.
    pub fn p99_ratio(&self, t: Target) -> f64 {
        median(self.paired(t, |r| ms(r.load.latency.p99)).into_iter())
    }
    /// Rounds in which the router kept at least nginx's share of direct throughput.
    pub fn router_ahead_rounds(&self) -> usize {
        self.ahead_rounds(Target::Router, Target::Nginx)
    }
    /// The ratio-table cells comparing `a` with `b`: throughput and p99 ratios to
    /// direct, and the rounds in which `a` kept at least `b`'s share.
    fn pair_cells(&self, a: Target, b: Target) -> String {
        format!(
            "{:.3} | {:.3} | {:.3} | {:.3} | {} of {}",
            self.throughput_ratio(a),
            self.throughput_ratio(b),
            self.p99_ratio(a),
            self.p99_ratio(b),
            self.ahead_rounds(a, b),
            self.get(Target::Direct).runs.len(),
        )
    }
    /// Rounds in which `a` kept at least `b`'s share of direct throughput.
    pub fn ahead_rounds(&self, a: Target, b: Target) -> usize {
        let a = self.round_throughput_ratios(a);
        let b = self.round_throughput_ratios(b);
        a.iter().zip(&b).filter(|(a, b)| a >= b).count()
    }
    /// The target: the router keeps at least nginx's share of direct throughput.
    pub fn met(&self) -> bool {
        self.throughput_ratio(Target::Router) >= self.throughput_ratio(Target::Nginx)
    }
    fn paired(&self, t: Target, figure: impl Fn(&Run) -> f64) -> Vec<f64> {
        self.paired_with(t, Target::Direct, figure)
    }
    fn paired_with(&self, t: Target, base: Target, figure: impl Fn(&Run) -> f64) -> Vec<f64> {
        let base = &self.get(base).runs;
        self.get(t)
            .runs
            .iter()
            .zip(base)
            .map(|(r, b)| ratio(figure(r), figure(b)))
            .collect()
    }
    /// gRPC ÷ binary HTTP throughput through the router in each round.
    pub fn round_grpc_ratios(&self) -> Vec<f64> {
        self.paired_with(Target::RouterGrpc, Target::RouterBinary, |r| {
            r.load.throughput
        })
    }
    /// gRPC ÷ binary HTTP throughput through the router: the median of the rounds' ratios.
    pub fn grpc_ratio(&self) -> f64 {
        median(self.round_grpc_ratios().into_iter())
    }
    /// The gRPC target: at least [`GRPC_TARGET`] × binary HTTP's throughput.
    pub fn grpc_met(&self) -> bool {
        self.grpc_ratio() >= GRPC_TARGET
    }
    /// The gRPC table's row: req/s of each, their ratio, and the router's CPU per request
    /// over each and the difference (what a gRPC call costs the router over binary HTTP).
    fn grpc_cells(&self) -> String {
        let (binary, grpc) = (self.get(Target::RouterBinary), self.get(Target::RouterGrpc));
        let (b, g) = (binary.cpu_us(|c| c.proxy), grpc.cpu_us(|c| c.proxy));
        format!(
            "{:.0} | {:.0} | {:.3} | {:.0} | {:.0} | {:+.0} | {:.3} | {:.3}",
            binary.throughput(),
            grpc.throughput(),
            self.grpc_ratio(),
            b,
            g,
            g - b,
            binary.p99(),
            grpc.p99(),
        )
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub machine: String,
    pub date: String,
    pub nginx_version: String,
    pub models: Vec<ModelResult>,
}

impl Report {
    /// One line per model and target missed.
    pub fn misses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .models
            .iter()
            .filter(|m| !m.met())
            .map(|m| {
                format!(
                    "target missed: {}: router ÷ direct {:.3} < nginx ÷ direct {:.3}",
                    m.name,
                    m.throughput_ratio(Target::Router),
                    m.throughput_ratio(Target::Nginx)
                )
            })
            .collect();
        out.extend(self.models.iter().filter(|m| !m.grpc_met()).map(|m| {
            format!(
                "target missed: {}: router-grpc ÷ router-binary {:.3} < {GRPC_TARGET}",
                m.name,
                m.grpc_ratio()
            )
        }));
        out
    }

    /// Markdown tables: figures per target, then the ratios.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s += "| Model | Target | req/s | p50 (ms) | p99 (ms) | errors | worker CPU (µs/req) | proxy CPU (µs/req) | client CPU (µs/req) | other load (cores) |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            for t in &m.targets {
                let proxy = if t.target == Target::Direct {
                    "—".to_owned()
                } else {
                    format!("{:.0}", t.cpu_us(|c| c.proxy))
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.3} | {:.3} | {} | {:.0} | {} | {:.0} | {:.2} |",
                    m.name,
                    t.target.name(),
                    t.throughput(),
                    t.p50(),
                    t.p99(),
                    t.errors(),
                    t.cpu_us(|c| c.worker),
                    proxy,
                    t.cpu_us(|c| c.client),
                    t.other_cores(),
                );
            }
        }
        s += "\n| Model | router ÷ direct (req/s) | nginx ÷ direct (req/s) | router p99 ÷ direct | nginx p99 ÷ direct | rounds router ≥ nginx | target: router ≥ nginx |\n";
        s += "|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            let verdict = if m.met() { "met" } else { "missed" };
            let pair = m.pair_cells(Target::Router, Target::Nginx);
            let _ = writeln!(s, "| {} | {pair} | {verdict} |", m.name);
        }
        s += "\nOver TLS (the same self-signed P-256 certificate for both; TLS 1.3; keep-alive connections, so the figures are the cost of encrypting each request and answer, not of handshakes):\n\n";
        s += "| Model | router-tls ÷ direct (req/s) | nginx-tls ÷ direct (req/s) | router-tls p99 ÷ direct | nginx-tls p99 ÷ direct | rounds router-tls ≥ nginx-tls |\n";
        s += "|---|---|---|---|---|---|\n";
        for m in &self.models {
            let pair = m.pair_cells(Target::RouterTls, Target::NginxTls);
            let _ = writeln!(s, "| {} | {pair} |", m.name);
        }
        let _ = write!(
            s,
            "\ngRPC through the router against binary HTTP through the router (the same features as raw FP32; {} concurrent calls per HTTP/2 connection; ratio the median of each round's ratio; router CPU per request, and what a gRPC call costs it over binary HTTP):\n\n",
            crate::client::GRPC_STREAMS_PER_CONNECTION
        );
        s += "| Model | router-binary req/s | router-grpc req/s | gRPC ÷ binary HTTP (req/s) | router CPU binary (µs/req) | router CPU gRPC (µs/req) | gRPC − binary (µs/req) | binary p99 (ms) | gRPC p99 (ms) | target: gRPC ≥ 0.8 × binary |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            let verdict = if m.grpc_met() { "met" } else { "missed" };
            let _ = writeln!(s, "| {} | {} | {verdict} |", m.name, m.grpc_cells());
        }
        s
    }

    /// Each round's throughput per model and target, and each round's ratios to direct
    /// (to judge the noise).
    pub fn rounds_table(&self) -> String {
        let mut s = String::from("| Model | Target | req/s per round |\n|---|---|---|\n");
        let join = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
        for m in &self.models {
            for t in &m.targets {
                let per = join(&mut t.runs.iter().map(|r| format!("{:.0}", r.load.throughput)));
                let _ = writeln!(s, "| {} | {} | {per} |", m.name, t.target.name());
            }
            let threads = join(&mut m.get(Target::Router).runs.iter().map(|r| {
                r.router_threads
                    .map_or_else(|| "?".to_owned(), |n| format!("{n:.0}"))
            }));
            let _ = writeln!(
                s,
                "| {} | router serving threads in use (end of window) | {threads} |",
                m.name
            );
            for t in [
                Target::Router,
                Target::Nginx,
                Target::RouterTls,
                Target::NginxTls,
            ] {
                let per = join(
                    &mut m
                        .round_throughput_ratios(t)
                        .into_iter()
                        .map(|r| format!("{r:.3}")),
                );
                let _ = writeln!(s, "| {} | {} ÷ direct | {per} |", m.name, t.name());
            }
            let per = join(&mut m.round_grpc_ratios().into_iter().map(|r| format!("{r:.3}")));
            let _ = writeln!(s, "| {} | router-grpc ÷ router-binary | {per} |", m.name);
        }
        s
    }

    /// The generated part of the docs section ([`DOCS`](super::DOCS)).
    pub fn docs(&self) -> String {
        let o = &self.options;
        let models: Vec<String> = self
            .models
            .iter()
            .map(|m| {
                let d: Vec<String> = m.dims.iter().map(ToString::to_string).collect();
                format!("`{}` ({})", m.name, d.join(" → "))
            })
            .collect();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {}, with `{}` ({}).",
            self.date,
            self.machine,
            o.command(),
            self.nginx_version
        );
        let _ = writeln!(
            s,
            "Router threads: {}; nginx `worker_processes {}`; {}; figures are medians of the rounds, ratios are medians of each round's ratio to that round's direct run. Models: {}.",
            o.router_threads
                .map_or_else(|| "default (one per core)".to_owned(), |t| t.to_string()),
            o.nginx_workers,
            o.load.describe(),
            models.join(", "),
        );
        s += "\n";
        s += &self.table();
        s += "\n";
        s += &self.rounds_table();
        s += "\n";
        s += &crate::bench::docs::verdict(
            &self.misses(),
            "Targets met for every model: the router keeps at least nginx's share of direct throughput, and gRPC through it at least 0.8 × binary HTTP's.",
        );
        s
    }

    /// The report as one JSON object (times in milliseconds).
    pub fn json(&self) -> serde_json::Value {
        let o = &self.options;
        let models: Vec<serde_json::Value> = self
            .models
            .iter()
            .map(|m| {
                let targets: serde_json::Map<String, serde_json::Value> = m
                    .targets
                    .iter()
                    .map(|t| {
                        let runs: Vec<serde_json::Value> = t
                            .runs
                            .iter()
                            .map(|r| {
                                serde_json::json!({
                                    "throughput": r.load.throughput,
                                    "p50_ms": ms(r.load.latency.p50), "p99_ms": ms(r.load.latency.p99),
                                    "min_ms": ms(r.load.latency.min), "max_ms": ms(r.load.latency.max),
                                    "count": r.load.latency.count, "errors": r.load.errors,
                                    "error_messages": r.load.error_messages,
                                    "connections": r.load.connections,
                                    "cpu_seconds": {
                                        "worker": r.cpu.worker, "proxy": r.cpu.proxy,
                                        "client": r.cpu.client, "etcd": r.cpu.etcd,
                                        "machine": r.cpu.machine, "others": r.cpu.others(),
                                    },
                                })
                            })
                            .collect();
                        let v = serde_json::json!({
                            "throughput": t.throughput(), "p50_ms": t.p50(), "p99_ms": t.p99(),
                            "errors": t.errors(),
                            "cpu_us_per_request": {
                                "worker": t.cpu_us(|c| c.worker),
                                "proxy": t.cpu_us(|c| c.proxy),
                                "client": t.cpu_us(|c| c.client),
                            },
                            "other_cores": t.other_cores(),
                            "rounds": runs,
                        });
                        (t.target.name().to_owned(), v)
                    })
                    .collect();
                serde_json::json!({
                    "model": m.name, "dims": m.dims, "targets": targets,
                    "ratios": {
                        "router_throughput": m.throughput_ratio(Target::Router),
                        "nginx_throughput": m.throughput_ratio(Target::Nginx),
                        "router_p99": m.p99_ratio(Target::Router),
                        "nginx_p99": m.p99_ratio(Target::Nginx),
                        "router_throughput_rounds": m.round_throughput_ratios(Target::Router),
                        "nginx_throughput_rounds": m.round_throughput_ratios(Target::Nginx),
                        "router_tls_throughput": m.throughput_ratio(Target::RouterTls),
                        "nginx_tls_throughput": m.throughput_ratio(Target::NginxTls),
                        "router_tls_p99": m.p99_ratio(Target::RouterTls),
                        "nginx_tls_p99": m.p99_ratio(Target::NginxTls),
                        "grpc_over_binary_throughput": m.grpc_ratio(),
                        "grpc_over_binary_throughput_rounds": m.round_grpc_ratios(),
                    },
                    "grpc_met": m.grpc_met(),
                    "router_ahead_rounds": m.router_ahead_rounds(),
                    "met": m.met(),
                })
            })
            .collect();
        serde_json::json!({
            "benchmark": "router",
            "date": self.date, "machine": self.machine, "nginx": self.nginx_version,
            "options": {
                "load": o.load.json(),
                "router_threads": o.router_threads, "nginx_workers": o.nginx_workers.to_string(),
            },
            "models": models,
            "met": self.misses().is_empty(),
        })
    }
}
