//! Shadow traffic: a sample of the requests that name no version is also scored by the
//! model's shadow version (`shardctl shadow`), after the client has its answer, and the
//! two answers are compared ([`compare`]).
//!
//! The request path only offers a [`Job`] to a bounded queue ([`Shadows::offer`]: one
//! `try_send`, never a wait); a full queue drops the job and counts it. One task per
//! router ([`run`]) takes jobs under the router's shadow rate (`--shadow-rate`) and at
//! most `--shadow-max-in-flight` at a time, so under load shadow work is shed first and
//! served requests keep their CPU. A shadow request goes to one member of the shard,
//! without retries, and its outcome is not held against the worker's health: a broken
//! shadow version can neither fail nor slow a served request, nor eject a worker.

pub mod compare;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::metrics as names;
use shardline_shared::records::TenantLimits;
use tokio::sync::{Semaphore, mpsc};
use tracing::info;

use crate::health::Fleet;
use crate::infer::forward::worker_path;
use crate::infer::members::candidates;
use crate::limiter::RateBucket;
use crate::select;
use crate::state::AppState;
use crate::upstream::{Attempt, Outcome, Upstream};

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
            per_model,
            totals: Arc::default(),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.abs_diff.clone()))?;
        if !per_model {
            for r in RESULTS {
                m.requests.with_label_values(&[*r]);
            }
        }
        Ok(m)
    }

    fn count(&self, key: &ModelKey, result: &str) {
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

    fn observe(&self, key: &ModelKey, diff: f64) {
        if self.per_model {
            let model = key.shard_key();
            self.abs_diff.with_label_values(&[&model]).observe(diff);
        } else {
            self.abs_diff.with_label_values::<&str>(&[]).observe(diff);
        }
        self.count(key, "compared");
    }
}

/// Takes jobs off the queue for as long as the router runs (one task per router).
pub async fn run<U: Upstream>(state: Arc<AppState<U>>) {
    let taken = state
        .shadow
        .rx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(mut rx) = taken else {
        return;
    };
    let limits = state.shadow.limits;
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut bucket = RateBucket::default();
    let rate = TenantLimits {
        max_in_flight: 0,
        rate_per_sec: limits.rate_per_sec,
    };
    let mut summary = Summary::default();
    while let Some(job) = rx.recv().await {
        summary.log_if_due(&state);
        if limits.rate_per_sec > 0 && bucket.try_take(Instant::now(), rate).is_err() {
            state.metrics.shadow.count(&job.key, "dropped");
            continue;
        }
        // Waiting for a slot fills the queue, and the request path then drops new jobs.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = score(&state, &job).await;
            match result {
                Ok(Some(diff)) => state.metrics.shadow.observe(&job.key, diff),
                Ok(None) => state.metrics.shadow.count(&job.key, "uncompared"),
                Err(label) => state.metrics.shadow.count(&job.key, label),
            }
        });
    }
}

/// Sends `job` to one member of its shard and compares the answers: the difference, or
/// `None` when the served answer had binary data; `Err` names the result to count.
async fn score<U: Upstream>(state: &AppState<U>, job: &Job) -> Result<Option<f64>, &'static str> {
    let snap = state.snapshot();
    let manifest = snap.manifest(&job.key, &job.version).ok_or("error")?;
    let now = Instant::now();
    let (members, cands) = candidates(&snap, &state.fleet, &job.key, manifest, now);
    let order = select::order(&cands, &mut fastrand::Rng::new());
    let member = order.first().map(|&i| &members[i]).ok_or("error")?;
    let path = worker_path(&job.key, &job.version);
    let health = state.fleet.get(member.id);
    let outcome = {
        // Counted in the member's load while it runs, so choices see it.
        let _in_flight = Fleet::enter(&health);
        state
            .upstream
            .send(Attempt {
                address: member.address,
                path: &path,
                body: job.body.clone(),
                header_length: job.header_length,
                public_name: job.key.model.as_str(),
                revision: snap.revision(),
                timeout: state.limits.attempt_timeout,
            })
            .await
    };
    let answer = match outcome {
        Outcome::Answered(a) if a.status.is_success() => a,
        _ => return Err("error"),
    };
    if !job.served_json || answer.header_length.is_some() {
        return Ok(None);
    }
    compare::max_abs_diff(&job.served, &answer.body)
        .map(Some)
        .map_err(|_| "mismatch")
}

/// A log line every minute with the shadow counters (the metrics hold the detail).
#[derive(Debug, Default)]
struct Summary {
    last: Option<Instant>,
}

impl Summary {
    fn log_if_due<U>(&mut self, state: &AppState<U>) {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t).as_secs() >= 60);
        if !due {
            return;
        }
        self.last = Some(now);
        let t = |i: usize| state.metrics.shadow.totals[i].load(Ordering::Relaxed);
        if (0..RESULTS.len()).all(|i| t(i) == 0) {
            return;
        }
        info!(
            compared = t(0),
            mismatched = t(1),
            errors = t(2),
            dropped = t(3),
            uncompared = t(4),
            "shadow traffic so far"
        );
    }
}
