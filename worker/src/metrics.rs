//! The worker's Prometheus metrics, registered into a registry it is given.
//!
//! Names come from `shardline_shared::metrics`. Labels are bounded: results and reasons
//! are small enums; per-model labels are only added with `--per-model-metrics`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use shardline_shared::ids::ModelKey;
use shardline_shared::metrics as names;

/// Load-time and latency buckets, in seconds: sub-millisecond scores to minute-long loads.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Values of `model_loads_total{result}` (see `LoadError::result_label`).
const LOAD_RESULTS: [&str; 7] = [
    "ok",
    "corrupt",
    "not_found",
    "unavailable",
    "too_large",
    "invalid",
    "error",
];

/// Values of `evictions_total{reason}`.
const EVICTION_REASONS: [&str; 3] = ["idle", "memory", "explicit"];

/// Every metric the worker exports.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub loads: IntCounterVec,
    pub load_duration: Histogram,
    pub cold_start_wait: Histogram,
    pub models_resident: IntGauge,
    pub resident_bytes: IntGauge,
    pub capacity_bytes: IntGauge,
    pub evictions: IntCounterVec,
    pub inference_duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub activation_bytes: IntGauge,
    pub activation_refusals: IntCounterVec,
    /// Blocking work admitted (running and waiting; see `crate::blocking`).
    pub blocking_work: IntGauge,
    pub blocking_refused: IntCounter,
    pub build_info: IntGaugeVec,
    per_model: bool,
}

impl WorkerMetrics {
    /// Creates and registers the metrics. With `per_model`, inference latency and
    /// in-flight gauges carry a `model` label (`tenant/model`).
    pub fn register(registry: &Registry, per_model: bool) -> prometheus::Result<Self> {
        let model_labels: &[&str] = if per_model { &["model"] } else { &[] };
        let m = Self {
            loads: IntCounterVec::new(
                Opts::new(
                    names::WORKER_MODEL_LOADS_TOTAL,
                    "Model loads by result (ok, corrupt, not_found, unavailable, too_large, invalid, error)",
                ),
                &["result"],
            )?,
            load_duration: Histogram::with_opts(
                HistogramOpts::new(
                    names::WORKER_MODEL_LOAD_DURATION_SECONDS,
                    "Time to fetch, verify and build a model",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            cold_start_wait: Histogram::with_opts(
                HistogramOpts::new(
                    names::WORKER_COLD_START_WAIT_SECONDS,
                    "Time requests spent waiting for their model to load",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            models_resident: IntGauge::new(
                names::WORKER_MODELS_RESIDENT,
                "Models currently loaded",
            )?,
            resident_bytes: IntGauge::new(
                names::WORKER_RESIDENT_BYTES,
                "Bytes accounted to resident models and loads in progress",
            )?,
            capacity_bytes: IntGauge::new(
                names::WORKER_CAPACITY_BYTES,
                "Memory budget for models (--memory-budget)",
            )?,
            evictions: IntCounterVec::new(
                Opts::new(
                    names::WORKER_EVICTIONS_TOTAL,
                    "Models evicted, by reason (idle, memory, explicit)",
                ),
                &["reason"],
            )?,
            inference_duration: HistogramVec::new(
                HistogramOpts::new(
                    names::WORKER_INFERENCE_DURATION_SECONDS,
                    "Time to score one request on a resident model",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                model_labels,
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(names::WORKER_IN_FLIGHT, "Inference requests being served"),
                model_labels,
            )?,
            activation_bytes: IntGauge::new(
                names::WORKER_ACTIVATION_BYTES,
                "Inference memory reserved by forward passes in progress (--inference-memory)",
            )?,
            activation_refusals: IntCounterVec::new(
                Opts::new(
                    names::WORKER_ACTIVATION_REFUSALS_TOTAL,
                    "Requests refused for inference memory, by reason (too_large: 413, busy: 503)",
                ),
                &["reason"],
            )?,
            blocking_work: IntGauge::new(
                names::WORKER_BLOCKING_WORK,
                "Model builds and large forward passes running or waiting for a blocking thread (--max-blocking, --max-blocking-queue)",
            )?,
            blocking_refused: IntCounter::new(
                names::WORKER_BLOCKING_REFUSED_TOTAL,
                "Requests refused with 503 because the blocking work and its queue were full",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(names::BUILD_INFO, "Build of this process; always 1"),
                &["component", "version"],
            )?,
            per_model,
        };
        registry.register(Box::new(m.loads.clone()))?;
        registry.register(Box::new(m.load_duration.clone()))?;
        registry.register(Box::new(m.cold_start_wait.clone()))?;
        registry.register(Box::new(m.models_resident.clone()))?;
        registry.register(Box::new(m.resident_bytes.clone()))?;
        registry.register(Box::new(m.capacity_bytes.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        registry.register(Box::new(m.inference_duration.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.activation_bytes.clone()))?;
        registry.register(Box::new(m.activation_refusals.clone()))?;
        registry.register(Box::new(m.blocking_work.clone()))?;
        registry.register(Box::new(m.blocking_refused.clone()))?;
        registry.register(Box::new(m.build_info.clone()))?;
        m.build_info
            .with_label_values(&["worker", env!("CARGO_PKG_VERSION")])
            .set(1);
        // Every label value exists from the start (at 0), so `rate` and `increase` see
        // the first load or eviction and dashboards show 0 rather than no data.
        for result in LOAD_RESULTS {
            m.loads.with_label_values(&[result]);
        }
        for reason in EVICTION_REASONS {
            m.evictions.with_label_values(&[reason]);
        }
        for reason in ["too_large", "busy"] {
            m.activation_refusals.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// Label values for a model's series: empty (and no allocation) unless per-model
    /// metrics are on.
    pub fn model_labels(&self, model: &ModelKey) -> Vec<String> {
        if self.per_model {
            vec![model.to_string()]
        } else {
            vec![]
        }
    }
}
