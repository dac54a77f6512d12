//! Shadow traffic: a sample of the requests that name no version is also scored by the
//! model's shadow version (`shardctl shadow`), after the client has its answer, and the
//! two answers are compared ([`compare`]).
//!
//! The request path only offers a [`Job`] to a bounded queue ([`Shadows::offer`]: one
//! `try_send`, never a wait); a full queue drops the job and counts it. One task per
//! router (`crate::infer::shadow::run`) takes jobs under the router's shadow rate (`--shadow-rate`) and at
//! most `--shadow-max-in-flight` at a time, so under load shadow work is shed first and
//! served requests keep their CPU. A shadow request goes to one member of the shard,
//! without retries, and its outcome is not held against the worker's health: a broken
//! shadow version can neither fail nor slow a served request, nor eject a worker.

pub mod compare;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::metrics as names;
use tokio::sync::mpsc;

/// Absolute score differences, from bit-equal to opposite.
const DIFF_BUCKETS: &[f64] = &[0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Results of a shadow request, each a series from the start.
const RESULTS: &[&str] = &["compared", "mismatch", "error", "dropped", "uncompared"];

/// The router's bounds on shadow work (`--shadow-max-in-flight`, `--shadow-rate`).
#[derive(Debug, Clone, Copy)]
pub struct ShadowLimits {
    pub max_in_flight: usize,
    /// Shadow requests per second this router may send.
    pub rate_per_sec: u32,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            rate_per_sec: 200,
        }
    }
}

/// One sampled request: what was sent, to which shadow version, and what was served.
#[derive(Debug)]
pub struct Job {
    pub key: ModelKey,
    pub version: VersionId,
    pub body: Bytes,
    pub header_length: Option<usize>,
    /// The served answer's body; compared only when it is all JSON.
    pub served: Bytes,
    pub served_json: bool,
}

/// The request path's side of shadow traffic: a bounded queue of jobs.
#[derive(Debug)]
pub struct Shadows {
    limits: ShadowLimits,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Shadows {
    pub fn new(limits: ShadowLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_in_flight.max(1));
        Self {
            limits,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// The bounds this queue was made with.
    pub fn limits(&self) -> ShadowLimits {
        self.limits
    }

    /// The queue's receiving end, for the one task that runs jobs (`None` once taken).
    pub fn take_jobs(&self) -> Option<mpsc::Receiver<Job>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Queues `job` if there is room; otherwise drops it and counts the drop.
    pub fn offer(&self, job: Job, metrics: &ShadowMetrics) {
        if let Err(e) = self.tx.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            metrics.count(&job.key, "dropped");
        }
    }
}

/// Shadow metrics; a `model` label only with `--per-model-metrics`.
#[derive(Debug, Clone)]
pub struct ShadowMetrics {
    requests: IntCounterVec,
    abs_diff: HistogramVec,
    /// The largest difference seen since start (updated under `max_lock`).
    abs_diff_max: GaugeVec,
    max_lock: Arc<Mutex<()>>,
    per_model: bool,
    /// Totals by result (in [`RESULTS`] order), for the log summary.
    totals: Arc<[AtomicU64; RESULTS.len()]>,
}

impl ShadowMetrics {
    pub fn register(registry: &Registry, per_model: bool) -> prometheus::Result<Self> {
        let (labels, diff_labels): (&[&str], &[&str]) = if per_model {
            (&["result", "model"], &["model"])
        } else {
            (&["result"], &[])
        };
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    names::ROUTER_SHADOW_REQUESTS_TOTAL,
                    "Sampled requests copied to a shadow version, by result (compared, mismatch, error, dropped, uncompared)",
                ),
                labels,
            )?,
            abs_diff: HistogramVec::new(
                HistogramOpts::new(
                    names::ROUTER_SHADOW_ABS_DIFF,
                    "Largest absolute difference between a served answer's values and its shadow's",
                )
                .buckets(DIFF_BUCKETS.to_vec()),
                diff_labels,
            )?,
            abs_diff_max: GaugeVec::new(
                Opts::new(
                    names::ROUTER_SHADOW_ABS_DIFF_MAX,
                    "Largest absolute difference between a served answer and its shadow since start",
                ),
                diff_labels,
            )?,
            max_lock: Arc::default(),
            per_model,
            totals: Arc::default(),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.abs_diff.clone()))?;
        registry.register(Box::new(m.abs_diff_max.clone()))?;
        if !per_model {
            for r in RESULTS {
                m.requests.with_label_values(&[*r]);
            }
        }
        Ok(m)
    }

    /// Counts one shadow request's `result`.
    pub fn count(&self, key: &ModelKey, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.totals[i].fetch_add(1, Ordering::Relaxed);
        }
        if self.per_model {
            let model = key.shard_key();
            self.requests.with_label_values(&[result, &model]).inc();
        } else {
            self.requests.with_label_values(&[result]).inc();
        }
    }

    /// Records one comparison's difference (and counts it as compared).
    pub fn observe(&self, key: &ModelKey, diff: f64) {
        let model = self.per_model.then(|| key.shard_key());
        let labels: Vec<&str> = model.iter().map(String::as_str).collect();
        self.abs_diff.with_label_values(&labels).observe(diff);
        let max = self.abs_diff_max.with_label_values(&labels);
        let _guard = self.max_lock.lock().unwrap_or_else(PoisonError::into_inner);
        if diff > max.get() {
            max.set(diff);
        }
        drop(_guard);
        self.count(key, "compared");
    }

    /// Totals by result since start, as `(result, count)`.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        RESULTS
            .iter()
            .zip(self.totals.iter())
            .map(|(r, t)| (*r, t.load(Ordering::Relaxed)))
            .collect()
    }
}
