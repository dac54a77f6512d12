//! What `bench-worker` measured ([`Report`]): the warm and cold ratios against their
//! targets, as a Markdown table, the docs section and one JSON object. Pure: no I/O.

use std::time::Duration;

use super::{COLD_TARGET, WARM_TARGET};
use crate::stats::{Summary, ms};

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub dims: Vec<usize>,
    pub weights_bytes: u64,
    pub http: Summary,
    pub in_process: Summary,
    /// `GET /v2/health/live` over the same client: the HTTP round trip alone.
    pub http_floor: Summary,
    pub cold: Summary,
    pub cold_baseline: Summary,
    pub iterations: usize,
    pub cold_rounds: usize,
}

impl Report {
    /// HTTP p50 / in-process p50.
    pub fn warm_ratio(&self) -> f64 {
        ratio(self.http.p50, self.in_process.p50)
    }

    /// Median cold first score / median fetch + parse.
    pub fn cold_ratio(&self) -> f64 {
        ratio(self.cold.p50, self.cold_baseline.p50)
    }

    /// Lines naming each missed target (empty when both are met).
    pub fn misses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.warm_ratio() > WARM_TARGET {
            out.push(format!(
                "target missed: warm p50 ratio {:.3} > {WARM_TARGET}",
                self.warm_ratio()
            ));
        }
        if self.cold_ratio() > COLD_TARGET {
            out.push(format!(
                "target missed: cold ratio {:.3} > {COLD_TARGET}",
                self.cold_ratio()
            ));
        }
        out
    }

    /// A readable table (Markdown).
    pub fn table(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        let mut s = format!(
            "model: MLP {} ({:.1} MB of f32 weights); warm n={}, cold rounds={}\n\n",
            dims.join(" → "),
            self.weights_bytes as f64 / 1e6,
            self.iterations,
            self.cold_rounds,
        );
        s += "| Measure | p50 (ms) | p99 (ms) | min (ms) | max (ms) |\n";
        s += "|---|---|---|---|---|\n";
        for (name, sum) in [
            ("warm infer over HTTP (1 row, JSON)", &self.http),
            (
                "warm in-process `MlpModel::forward` (1 row)",
                &self.in_process,
            ),
            (
                "HTTP round trip alone (`GET /v2/health/live`)",
                &self.http_floor,
            ),
            ("cold first score (unload, then infer)", &self.cold),
            (
                "baseline: `fetch_model` + `from_safetensors`",
                &self.cold_baseline,
            ),
        ] {
            s += &format!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                ms(sum.p50),
                ms(sum.p99),
                ms(sum.min),
                ms(sum.max)
            );
        }
        s += "\n| Ratio | Target | Measured |\n|---|---|---|\n";
        s += &format!(
            "| warm: HTTP p50 / in-process p50 | ≤ {WARM_TARGET} | {:.3} |\n",
            self.warm_ratio()
        );
        s += &format!(
            "| cold: median first score / median (fetch + parse) | ≤ {COLD_TARGET} | {:.3} |\n",
            self.cold_ratio()
        );
        s
    }

    /// The generated part of the docs section ([`DOCS`](super::DOCS)): `header` (machine, command,
    /// date), the tables, and the verdict.
    pub fn docs(&self, header: &str) -> String {
        let verdict = crate::bench::docs::verdict(&self.misses(), "Both targets met.");
        format!("{header}\n{}\n{verdict}", self.table())
    }

    /// The report as one JSON object (times in milliseconds).
    pub fn json(&self) -> serde_json::Value {
        let sum = |s: &Summary| {
            serde_json::json!({
                "p50_ms": ms(s.p50), "p99_ms": ms(s.p99),
                "min_ms": ms(s.min), "max_ms": ms(s.max), "count": s.count,
            })
        };
        serde_json::json!({
            "benchmark": "worker",
            "dims": self.dims,
            "weights_bytes": self.weights_bytes,
            "warm": {
                "http": sum(&self.http),
                "in_process": sum(&self.in_process),
                "http_floor": sum(&self.http_floor),
                "ratio_p50": self.warm_ratio(),
                "target": WARM_TARGET,
                "met": self.warm_ratio() <= WARM_TARGET,
            },
            "cold": {
                "first_score": sum(&self.cold),
                "fetch_parse": sum(&self.cold_baseline),
                "ratio_median": self.cold_ratio(),
                "target": COLD_TARGET,
                "met": self.cold_ratio() <= COLD_TARGET,
            },
        })
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}
