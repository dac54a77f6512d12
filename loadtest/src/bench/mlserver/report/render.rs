//! How a `bench-mlserver` [`Report`] is told: Markdown tables of every target's figures,
//! memory, ratios and rounds, the docs section and one JSON object. Pure: no I/O.

use std::fmt::Write as _;

use super::{RSS_TARGET, Report, Run, THROUGHPUT_TARGET};
use crate::bench::docs::header;
use crate::bench::mlserver::{TOLERANCE, Target};
use crate::procfs::Footprint;
use crate::stats::ms;

impl Report {
    /// Markdown tables: figures per target, memory, ratios against targets, rounds.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| Target | req/s | p50 (ms) | p99 (ms) | errors | server CPU (µs/req) | of which router | client CPU (µs/req) | other load (cores) |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for t in Target::ALL {
            let router = if t.is_shardline() {
                format!("{:.0}", self.med(t, |r| r.cpu_us(r.cpu.router)))
            } else {
                "—".to_owned()
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.3} | {:.3} | {} | {:.0} | {router} | {:.0} | {:.2} |",
                t.name(),
                self.med(t, |r| r.load.throughput),
                self.med(t, |r| ms(r.load.latency.p50)),
                self.med(t, |r| ms(r.load.latency.p99)),
                self.runs(t).iter().map(|r| r.load.errors).sum::<u64>(),
                self.med(t, |r| r.cpu_us(r.cpu.server)),
                self.med(t, |r| r.cpu_us(r.cpu.client)),
                self.med(t, Run::other_cores),
            );
        }
        let (m, w, r) = (
            self.memory(Target::MlServer),
            self.memory(Target::Shardline),
            self.router_memory(),
        );
        s += "\n| Process(es) | RSS (MiB) | PSS (MiB) | processes |\n|---|---|---|---|\n";
        for (name, f) in [
            ("MLServer, whole process tree", m),
            ("Shardline worker", w),
            ("Shardline router", r),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {:.1} | {:.1} | {} |",
                f.rss_mib(),
                f.pss_mib(),
                f.processes
            );
        }
        let met = |ok: bool| if ok { "met" } else { "missed" };
        let (tr, pr, rr) = (self.throughput_ratio(), self.p99_ratio(), self.rss_ratio());
        s += "\n| Ratio | Target | Measured | |\n|---|---|---|---|\n";
        let _ = writeln!(
            s,
            "| Shardline ÷ MLServer throughput | ≥ {THROUGHPUT_TARGET} | {tr:.2} | {} |",
            met(tr >= THROUGHPUT_TARGET)
        );
        let _ = writeln!(
            s,
            "| Shardline p99 ÷ MLServer p99 | < 1 | {pr:.3} | {} |",
            met(pr < 1.0)
        );
        let _ = writeln!(
            s,
            "| MLServer RSS ÷ worker RSS | ≥ {RSS_TARGET} | {rr:.2} | {} |",
            met(rr >= RSS_TARGET)
        );
        let _ = writeln!(
            s,
            "| Shardline ÷ MLServer throughput over gRPC | — | {:.2} | |",
            self.grpc_throughput_ratio()
        );
        let _ = writeln!(
            s,
            "| MLServer PSS ÷ worker PSS | — | {:.2} | |",
            self.pss_ratio()
        );
        let _ = writeln!(
            s,
            "| MLServer RSS ÷ (worker + router) RSS | — | {:.2} | |",
            self.rss_ratio_with_router()
        );
        s += "\n| Target | req/s per round | p99 (ms) per round |\n|---|---|---|\n";
        for t in Target::ALL {
            let runs = self.runs(t);
            let per =
                |f: &dyn Fn(&Run) -> String| runs.iter().map(f).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                t.name(),
                per(&|r| format!("{:.0}", r.load.throughput)),
                per(&|r| format!("{:.2}", ms(r.load.latency.p99))),
            );
        }
        s
    }

    /// The generated part of the docs section.
    pub fn docs(&self) -> String {
        let o = &self.options;
        let m = &self.model;
        let a = &self.agreement;
        let v = |k: &str| self.versions.get(k).map_or("?", String::as_str);
        let dims: Vec<String> = m.dims.iter().map(ToString::to_string).collect();
        let mut s = header(&o.command());
        s += "\n";
        let _ = writeln!(
            s,
            "MLServer {} with mlserver-sklearn {} (scikit-learn {}, numpy {}, uvloop {}, uvicorn {}, Python {}), `parallel_workers {}`. Model: `MLPRegressor` {} (relu, identity output) trained on {} events of tenant `{}` ({} epochs, {:.1} s; held-out AUC {} on {} events); Shardline serves the same weights as f32. Scores of {} events agree: max |Δ| {:.2e}, {:.2e} of the largest score (tolerance {:.0e}). The {}; figures are medians of the rounds, throughput and p99 ratios medians of each round's ratio; memory is the largest sample at the end of a target's windows.",
            v("mlserver"),
            v("mlserver-sklearn"),
            v("scikit-learn"),
            v("numpy"),
            v("uvloop"),
            v("uvicorn"),
            v("python"),
            o.parallel_workers,
            dims.join(" → "),
            m.train.rows,
            m.tenant,
            m.train.epochs,
            m.train.seconds,
            m.auc.map_or("n/a".to_owned(), |x| format!("{x:.3}")),
            m.auc_rows,
            a.rows,
            a.max_abs,
            a.relative,
            TOLERANCE,
            o.load.describe(),
        );
        s += "\n";
        s += &self.table();
        s += "\n";
        s += &crate::bench::docs::verdict(&self.misses(), "Every target met.");
        s
    }

    /// The report as one JSON object (times in milliseconds, memory in KiB).
    pub fn json(&self) -> serde_json::Value {
        let o = &self.options;
        let footprint = |f: Footprint| serde_json::json!({"rss_kib": f.rss_kib, "pss_kib": f.pss_kib, "processes": f.processes});
        let target = |t: Target| {
            let rounds: Vec<serde_json::Value> = self
                .runs(t)
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "throughput": r.load.throughput,
                        "p50_ms": ms(r.load.latency.p50), "p99_ms": ms(r.load.latency.p99),
                        "max_ms": ms(r.load.latency.max), "count": r.load.latency.count,
                        "errors": r.load.errors, "error_messages": r.load.error_messages,
                        "cpu_seconds": {
                            "server": r.cpu.server, "router": r.cpu.router,
                            "client": r.cpu.client, "machine": r.cpu.machine,
                        },
                        "memory": footprint(r.memory),
                        "router_memory": r.router_memory.map(footprint),
                    })
                })
                .collect();
            serde_json::json!({
                "throughput": self.med(t, |r| r.load.throughput),
                "p50_ms": self.med(t, |r| ms(r.load.latency.p50)),
                "p99_ms": self.med(t, |r| ms(r.load.latency.p99)),
                "errors": self.runs(t).iter().map(|r| r.load.errors).sum::<u64>(),
                "server_cpu_us_per_request": self.med(t, |r| r.cpu_us(r.cpu.server)),
                "memory": footprint(self.memory(t)),
                "rounds": rounds,
            })
        };
        serde_json::json!({
            "benchmark": "mlserver",
            "date": self.date, "machine": self.machine, "command": o.command(),
            "versions": self.versions,
            "options": {
                "load": o.load.json(), "router_threads": o.router_threads,
                "parallel_workers": o.parallel_workers, "train_rows": o.train_rows,
                "max_iter": o.max_iter, "seed": o.seed,
            },
            "model": {
                "tenant": self.model.tenant, "dims": self.model.dims,
                "train": self.model.train, "auc": self.model.auc,
            },
            "agreement": {
                "rows": self.agreement.rows, "max_abs": self.agreement.max_abs,
                "relative": self.agreement.relative,
            },
            "mlserver": target(Target::MlServer),
            "shardline": target(Target::Shardline),
            "mlserver_grpc": target(Target::MlServerGrpc),
            "shardline_grpc": target(Target::ShardlineGrpc),
            "router_memory": footprint(self.router_memory()),
            "ratios": {
                "throughput": self.throughput_ratio(), "p99": self.p99_ratio(),
                "rss": self.rss_ratio(), "pss": self.pss_ratio(),
                "rss_with_router": self.rss_ratio_with_router(),
                "grpc_throughput": self.grpc_throughput_ratio(),
            },
            "met": self.misses().is_empty(),
        })
    }
}
