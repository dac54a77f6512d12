//! Forwarding one validated inference: the attempt loop over the chosen shard members
//! — per-attempt timeout within the request's deadline, failover to the next member on
//! a failure or a 502/503/504 answer, each retry paid from the tenant's share and from
//! the router's retry budget — and the per-worker health, metrics and in-flight counts
//! each attempt updates. A timeout that the client's own deadline cut short is not held
//! against the worker: a tenant sending 50 ms deadlines to a model that needs 100 ms
//! must not eject its workers for everyone.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

use super::members::candidates;
use super::relay::Relay;
use crate::error::RouterError;
use crate::health::Fleet;
use crate::select;
use crate::state::{AppState, TenantGate};
use crate::upstream::{Answer, Attempt, Failure, Outcome, Upstream};

/// What is forwarded, for whom, and by when.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub key: &'a ModelKey,
    pub manifest: &'a Manifest,
    /// The tenant's gate on this router (its share of retries).
    pub tenant: &'a TenantGate,
    pub deadline: Duration,
    pub started: Instant,
    /// The client's `Inference-Header-Content-Length`, forwarded with the body.
    pub header_length: Option<usize>,
}

/// Forwards the validated `body` to a member of the model's shard, failing over to the
/// next member (as [`select::order`] orders them) while the tenant's share of retries,
/// the router's retry budget and the deadline allow.
pub async fn forward<U: Upstream>(
    state: &AppState<U>,
    snap: &Snapshot,
    request: Request<'_>,
    body: Bytes,
) -> Result<Relay, RouterError> {
    let Request {
        key,
        manifest,
        tenant,
        deadline,
        started,
        header_length,
    } = request;
    let (members, cands) = candidates(snap, &state.fleet, key, manifest, started);
    let order = select::order(&cands, &mut fastrand::Rng::new());
    if order.is_empty() {
        return Err(RouterError::Unavailable(format!(
            "no live worker serves model {:?}",
            key.model.as_str()
        )));
    }
    let path = worker_path(key, &manifest.version);
    let end = started + deadline;
    let ratio = {
        let mut budget = state.budget.lock().unwrap_or_else(PoisonError::into_inner);
        budget.deposit(started);
        budget.ratio_permille()
    };
    tenant.retries.deposit(ratio);
    // The last attempt's answer when it was a retryable one (502/503/504): passed on if
    // no later attempt is made or succeeds. A failed attempt (no answer) clears it.
    let mut last: Option<(Option<HeaderValue>, Answer)> = None;
    for (attempt, &i) in order.iter().enumerate() {
        let member = &members[i];
        let now = Instant::now();
        if now >= end {
            return Err(RouterError::DeadlineExceeded(deadline));
        }
        if attempt > 0 {
            // The tenant's own share first: a tenant out of retries leaves the router's
            // budget to the others.
            let allowed = tenant.retries.try_withdraw()
                && state
                    .budget
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .try_withdraw(now);
            if !allowed {
                state.metrics.retries_refused.inc();
                break;
            }
            state.metrics.retries.inc();
        }
        let remaining = end - now;
        let last_chance = attempt + 1 == order.len();
        let timeout = if last_chance {
            remaining
        } else {
            remaining.min(state.limits.attempt_timeout)
        };
        // The client's deadline, not the router's attempt timeout, limits this attempt.
        let cut_by_client = timeout < state.limits.attempt_timeout;
        let health = state.fleet.get(member.id);
        let outcome = {
            let _in_flight = Fleet::enter(&health);
            state
                .upstream
                .send(Attempt {
                    address: member.address,
                    path: &path,
                    body: body.clone(),
                    header_length,
                    public_name: key.model.as_str(),
                    revision: snap.revision(),
                    timeout,
                })
                .await
        };
        let took = now.elapsed().as_secs_f64();
        health
            .upstream_duration
            .get_or_init(|| {
                state
                    .metrics
                    .upstream_duration
                    .with_label_values(&[member.id.as_str()])
            })
            .observe(took);
        state.metrics.upstream_result(outcome.label()).inc();
        match &outcome {
            Outcome::Answered(_) => state.fleet.answered(&health),
            // The router's own shortage: the worker is not ejected, nothing is retried.
            Outcome::Failed(Failure::Exhausted(e)) => {
                tracing::warn!(worker = %member.id, error = %e, "out of resources to reach a worker");
                return Err(RouterError::Unavailable(
                    "the router is out of connections; try again shortly".into(),
                ));
            }
            Outcome::Failed(Failure::Timeout) if cut_by_client => {
                state.metrics.client_deadline_timeouts.inc();
            }
            Outcome::Failed(f) => {
                tracing::debug!(worker = %member.id, model = %key, failure = ?f, "attempt failed");
                state.fleet.failed(&health, Instant::now());
            }
        }
        let retryable = outcome.retryable();
        let worker = || {
            health
                .header
                .get_or_init(|| HeaderValue::from_str(member.id.as_str()).ok())
                .clone()
        };
        last = match outcome {
            Outcome::Answered(answer) if !retryable => return Ok(Relay::new(worker(), answer)),
            Outcome::Answered(answer) => Some((worker(), answer)),
            Outcome::Failed(_) => None,
        };
    }
    if Instant::now() >= end {
        return Err(RouterError::DeadlineExceeded(deadline));
    }
    match last {
        Some((worker, answer)) => Ok(Relay::new(worker, answer)),
        None => Err(RouterError::Unavailable(format!(
            "no worker of model {:?}'s shard answered; try again shortly",
            key.model.as_str()
        ))),
    }
}

/// The worker's inference path for one version of a model.
pub(crate) fn worker_path(key: &ModelKey, version: &VersionId) -> String {
    [
        "/v2/models/",
        key.tenant.as_str(),
        ".",
        key.model.as_str(),
        "/versions/",
        version.as_str(),
        "/infer",
    ]
    .concat()
}
