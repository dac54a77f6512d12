//! The inference service, independent of the transport: one request's pipeline from
//! its parts ([`InferRequest`] and a body future) to a worker's answer ([`Relay`]) or
//! the router's refusal ([`RouterError`]) — authenticate ([`auth`]) → resolve the model
//! ([`mod@resolve`]) → admit under the tenant's limits → read and validate the body → choose
//! shard members ([`members`]) and forward with failover, retry budget and deadline
//! ([`forward`]) → relay the answer ([`relay`]). Both transports call [`handle`]: the
//! HTTP/1.1 fast path (`http1`) and the axum routes (`routes`). Generic over the
//! [`Upstream`] that sends attempts to workers, so tests run it in process.

pub mod auth;
pub mod forward;
pub mod members;
pub mod relay;
pub mod resolve;
pub mod shadow;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use prometheus::IntGauge;
use shardline_service::http::BodyError;
use shardline_shared::decode::{InputSpec, parse_header_length, validate_request};
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

pub use self::auth::{KeyMemo, authenticate};
pub use self::relay::Relay;
pub use self::resolve::resolve;
use crate::codec::DEADLINE_HEADER;
use crate::error::RouterError;
use crate::state::{AppState, Limits};
use crate::upstream::Upstream;

/// What the inference service needs of a request besides its body.
#[derive(Debug, Clone, Copy)]
pub struct InferRequest<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    /// For a request naming no version, the version its transport already chose (live or
    /// a canary's; gRPC converts the body for it before the service sees it).
    pub chosen: Option<&'a str>,
    /// The `Authorization` value.
    pub authorization: Option<&'a [u8]>,
    /// The `x-shardline-deadline-ms` value.
    pub deadline: Option<&'a [u8]>,
    /// The `Inference-Header-Content-Length` value: the body is that much JSON followed
    /// by binary tensor data (`None`: all JSON).
    pub header_length: Option<&'a [u8]>,
    /// The `x-shardline-route-key` value: the entity a sticky canary keeps on one version.
    pub route_key: Option<&'a [u8]>,
    /// The declared `Content-Length` (`None`: a body of unknown length), reserved under
    /// the router's in-flight byte budget before the body is read.
    pub content_length: Option<u64>,
}

/// Authenticates, admits, reserves the body's bytes ([`crate::inflight`]), reads
/// (`body`: [`read_body`] for an axum body, awaited only once the request is admitted and
/// its bytes reserved), validates and forwards one inference; counts its answer. The
/// reservation is held until the request ends, also when this future is dropped.
pub async fn handle<U: Upstream>(
    state: &AppState<U>,
    request: InferRequest<'_>,
    body: impl Future<Output = Result<Bytes, RouterError>>,
    keys: &mut auth::KeyMemo,
) -> Result<relay::Relay, RouterError> {
    let started = Instant::now();
    let _in_flight = InFlightGauge::enter(&state.metrics.in_flight);
    let snap = state.snapshot();
    let mut model = None;
    let result: Result<relay::Relay, RouterError> = async {
        let tenant = keys.tenant(&snap, request.authorization)?;
        let unpinned = resolve::Unpinned {
            route_key: request.route_key,
            draw: fastrand::u64(..),
        };
        let (key, manifest) = resolve::resolve(
            &snap,
            &tenant,
            request.name,
            request.version.or(request.chosen),
            Some(unpinned),
        )?;
        if state.metrics.per_model() {
            model = Some(key.clone());
        }
        let deadline = deadline(request.deadline, &state.limits)?;
        let header_length = request.header_length.map(parse_header_length).transpose()?;
        let limits = snap
            .tenants()
            .get(&tenant)
            .map(|t| t.value.limits)
            .unwrap_or_default();
        let permit = state.admit(&tenant, limits, started)?;
        let _body_bytes = state.reserve_body(request.content_length)?;
        let bytes = body.await?;
        let spec = InputSpec::for_model(&manifest.config, state.limits.max_rows);
        validate_request(&bytes, header_length, &spec)?;
        let shadow = if request.version.is_none() {
            shadow_of(&snap, &key, manifest)
        } else {
            None
        };
        let copy = shadow.as_ref().map(|_| bytes.clone());
        let forwarded = forward::Request {
            key: &key,
            manifest,
            tenant: permit.gate(),
            deadline,
            started,
            header_length,
        };
        let relay = forward::forward(state, &snap, forwarded, bytes).await?;
        if let (Some(version), Some(body)) = (shadow, copy)
            && relay.answer.status.is_success()
        {
            let job = crate::shadow::Job {
                key: key.clone(),
                version,
                body,
                header_length,
                served: relay.answer.body.clone(),
                served_json: relay.answer.header_length.is_none(),
            };
            state.shadow.offer(job, &state.metrics.shadow);
        }
        Ok(relay)
    }
    .await;
    let status = match &result {
        Ok(relay) => relay.answer.status,
        Err(e) => e.status(),
    };
    state.metrics.answered(
        model.as_ref(),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    result
}

/// The shadow version a request to `key` served by `served` is copied to, if the model
/// has a shadow (of another version) and this request is in its sample.
fn shadow_of(snap: &Snapshot, key: &ModelKey, served: &Manifest) -> Option<VersionId> {
    let live = snap.model(key)?.live.as_ref()?;
    let shadow = live.value.shadow.as_deref()?;
    (shadow.version != served.version && shadow.samples(fastrand::u64(..)))
        .then(|| shadow.version.clone())
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, RouterError> {
    shardline_service::http::read_body(headers, body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => RouterError::TooLarge(limit),
            BodyError::TimedOut => RouterError::BodyTimeout,
            BodyError::Unreadable(_) => RouterError::BadRequest(e.to_string()),
        })
}

/// The request's deadline: its `x-shardline-deadline-ms` value (capped) or the default.
pub fn deadline(value: Option<&[u8]>, limits: &Limits) -> Result<Duration, RouterError> {
    let Some(v) = value else {
        return Ok(limits.default_deadline);
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
    Ok(Duration::from_millis(ms).min(limits.max_deadline))
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
struct InFlightGauge<'a>(&'a IntGauge);

impl<'a> InFlightGauge<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlightGauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
