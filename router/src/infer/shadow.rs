//! Running shadow requests (see [`crate::shadow`]): one task per router takes the
//! queued jobs under the router's shadow rate and in-flight bound, sends each to one
//! member of the shard without retries or health effects, and compares the answers.

use std::sync::Arc;
use std::time::Instant;

use shardline_shared::records::TenantLimits;
use tokio::sync::Semaphore;
use tracing::info;

use super::forward::worker_path;
use super::members::candidates;
use crate::health::Fleet;
use crate::limiter::RateBucket;
use crate::select;
use crate::shadow::Job;
use crate::state::AppState;
use crate::upstream::{Attempt, Outcome, Upstream};

/// Takes jobs off the queue for as long as the router runs (one task per router).
pub async fn run<U: Upstream>(state: Arc<AppState<U>>) {
    let Some(mut rx) = state.shadow.take_jobs() else {
        return;
    };
    let limits = state.shadow.limits();
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
    crate::shadow::compare::max_abs_diff(&job.served, &answer.body)
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
        let totals = state.metrics.shadow.totals();
        if totals.iter().all(|(_, n)| *n == 0) {
            return;
        }
        let t = |r: &str| {
            totals
                .iter()
                .find(|(name, _)| *name == r)
                .map_or(0, |(_, n)| *n)
        };
        info!(
            compared = t("compared"),
            mismatched = t("mismatch"),
            errors = t("error"),
            dropped = t("dropped"),
            uncompared = t("uncompared"),
            "shadow traffic so far"
        );
    }
}
