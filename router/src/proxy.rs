//! The inference path: from an authenticated tenant and a model name to a worker's
//! answer — resolve the version, validate the body, choose shard members, forward with
//! a deadline, and fail over to another member within the retry budget.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use shardline_shared::decode::{InputSpec, validate_infer};
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::manifest::Manifest;
use shardline_shared::placement;
use shardline_shared::records::AdminState;
use shardline_shared::snapshot::Snapshot;

use crate::error::RouterError;
use crate::health::Fleet;
use crate::select::{self, Candidate};
use crate::state::AppState;
use crate::upstream::{Answer, Attempt, Outcome};

/// Header naming the worker that answered.
pub const WORKER_HEADER: &str = "x-shardline-worker";
/// Header by which a client sets its deadline, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-shardline-deadline-ms";

/// The request's deadline: its `x-shardline-deadline-ms` value (capped) or the default.
pub fn deadline(value: Option<&[u8]>, state: &AppState) -> Result<Duration, RouterError> {
    let Some(v) = value else {
        return Ok(state.limits.default_deadline);
    };
    let ms = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .ok_or_else(|| {
            RouterError::BadRequest(format!(
                "{DEADLINE_HEADER} must be a positive number of milliseconds"
            ))
        })?;
    Ok(Duration::from_millis(ms).min(state.limits.max_deadline))
}

/// A shard member as the request path sees it.
#[derive(Debug)]
struct Member<'a> {
    id: &'a WorkerId,
    address: &'a str,
}

/// The members that may serve `key`: the stored assignment's current then previous
/// members, or — for a model published too recently to be placed — the top k live
/// active workers by rendezvous score (deterministic at a given revision). Returns the
/// live members with their choice attributes.
fn candidates<'s>(
    snap: &'s Snapshot,
    fleet: &Fleet,
    key: &ModelKey,
    manifest: &Manifest,
    now: Instant,
) -> (Vec<Member<'s>>, Vec<Candidate>) {
    let mut ids: Vec<(&WorkerId, bool)> = Vec::new();
    if let Some(a) = snap.assignments().get(key) {
        ids.extend(a.value.workers.iter().map(|w| (w, false)));
        ids.extend(
            a.value
                .previous
                .iter()
                .filter(|w| !a.value.workers.contains(w))
                .map(|w| (w, true)),
        );
    } else if let Ok(params) = snap.placement_params() {
        let shard_key = key.shard_key();
        let mut ranked: Vec<(u64, &WorkerId)> = snap
            .workers()
            .keys()
            .filter(|w| snap.admin_state(w) == AdminState::Active)
            .map(|w| (placement::score(&params, &shard_key, w), w))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let k = snap.shard_size(&key.tenant) as usize;
        ids.extend(ranked.into_iter().take(k).map(|(_, w)| (w, false)));
    }
    let mut members = Vec::with_capacity(ids.len());
    let mut cands = Vec::with_capacity(ids.len());
    for (id, previous) in ids {
        let Some(record) = snap.workers().get(id) else {
            continue;
        };
        let health = fleet.get(id);
        let resident = record
            .value
            .resident
            .binary_search_by(|r| (&r.model, &r.version).cmp(&(key, &manifest.version)))
            .is_ok();
        cands.push(Candidate {
            index: members.len(),
            eligible: true,
            preferred: !previous
                && snap.admin_state(id) != AdminState::Draining
                && !fleet.is_ejected(&health, now),
            resident,
            in_flight: health.in_flight(),
        });
        members.push(Member {
            id,
            address: &record.value.address,
        });
    }
    (members, cands)
}

/// Validates `body` for `manifest`, then forwards it to a member of the model's shard.
pub async fn infer(
    state: &AppState,
    snap: &Snapshot,
    key: &ModelKey,
    manifest: &Manifest,
    body: Bytes,
    deadline: Duration,
    started: Instant,
) -> Result<Relay, RouterError> {
    let spec = InputSpec::for_model(&manifest.config, state.limits.max_rows);
    validate_infer(&body, &spec)?;

    let (members, cands) = candidates(snap, &state.fleet, key, manifest, started);
    let order = select::order(&cands, &mut fastrand::Rng::new());
    if order.is_empty() {
        return Err(RouterError::Unavailable(format!(
            "no live worker serves model {:?}",
            key.model.as_str()
        )));
    }
    let path = [
        "/v2/models/",
        key.tenant.as_str(),
        ".",
        key.model.as_str(),
        "/versions/",
        manifest.version.as_str(),
        "/infer",
    ]
    .concat();
    let end = started + deadline;
    state
        .budget
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .deposit(started);
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
            let allowed = state
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
        let health = state.fleet.get(member.id);
        let outcome = {
            let _in_flight = Fleet::enter(&health);
            state
                .upstream
                .send(Attempt {
                    address: member.address,
                    path: &path,
                    body: body.clone(),
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

/// A worker's answer as the client gets it: status, content type, `Retry-After` and
/// body as the worker gave them, plus the header naming the worker.
#[derive(Debug)]
pub struct Relay {
    /// The worker's id as a header value (`None` if it cannot be one).
    pub worker: Option<HeaderValue>,
    pub answer: Answer,
}

impl Relay {
    fn new(worker: Option<HeaderValue>, answer: Answer) -> Self {
        Self { worker, answer }
    }

    /// The answer's headers other than its framing, as name and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        let content_type = self.answer.content_type.as_ref().unwrap_or(&JSON);
        [
            Some(("content-type", content_type)),
            self.answer.retry_after.as_ref().map(|v| ("retry-after", v)),
            self.worker.as_ref().map(|v| (WORKER_HEADER, v)),
        ]
        .into_iter()
        .flatten()
    }
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl IntoResponse for Relay {
    fn into_response(self) -> Response {
        let mut response = (self.answer.status, self.answer.body.clone()).into_response();
        for (name, value) in self.headers() {
            response.headers_mut().insert(name, value.clone());
        }
        response
    }
}
