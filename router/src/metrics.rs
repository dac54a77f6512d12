//! The router's Prometheus metrics, registered into a registry it is given.
//!
//! Names come from `shardline_shared::metrics`. Labels are bounded: status codes,
//! outcome kinds and worker ids (one per worker of the fleet); a `model` label
//! (`tenant/model`) is added only with `--per-model-metrics`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use shardline_shared::ids::ModelKey;
use shardline_shared::metrics as names;

/// Latency buckets in seconds: sub-millisecond hops to the 60 s deadline cap.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Values of `upstream_requests{result}` (see `Outcome::label`); the last is the fallback.
const UPSTREAM_RESULTS: [&str; 6] = [
    "ok",
    "client_error",
    "server_error",
    "connect_error",
    "timeout",
    "broken",
];

/// Every metric the router's request path exports.
#[derive(Debug, Clone)]
pub struct RouterMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub retries: IntCounter,
    pub retries_refused: IntCounter,
    pub client_deadline_timeouts: IntCounter,
    pub upstream_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub in_flight: IntGauge,
    pub tenant_limited: IntCounterVec,
    /// Body bytes reserved by requests in flight (`--max-inflight-bytes`).
    pub inflight_bytes: IntGauge,
    pub inflight_bytes_refused: IntCounter,
    pub build_info: IntGaugeVec,
    /// Shadow requests by result, and the served/shadow score differences.
    pub shadow: crate::shadow::ShadowMetrics,
    upstream_by_result: Vec<IntCounter>,
    /// Without per-model labels: `requests{code="200"}` and the unlabelled duration,
    /// resolved once so the common answer skips the label lookups. `None` means the
    /// request metrics carry a `model` label.
    plain: Option<(IntCounter, prometheus::Histogram)>,
}

impl RouterMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry, per_model: bool) -> prometheus::Result<Self> {
        let labels: &[&str] = if per_model {
            &["code", "model"]
        } else {
            &["code"]
        };
        let duration_labels: &[&str] = if per_model { &["model"] } else { &[] };
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    names::ROUTER_REQUESTS_TOTAL,
                    "Public API requests answered, by HTTP status code",
                ),
                labels,
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    names::ROUTER_REQUEST_DURATION_SECONDS,
                    "Time from a request's arrival to its answer, retries included",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                duration_labels,
            )?,
            retries: IntCounter::new(
                names::ROUTER_RETRIES_TOTAL,
                "Inference attempts sent to another shard member after a failed one",
            )?,
            retries_refused: IntCounter::new(
                names::ROUTER_RETRIES_REFUSED_TOTAL,
                "Retries not sent because the tenant's share or the router's retry budget was spent",
            )?,
            client_deadline_timeouts: IntCounter::new(
                names::ROUTER_CLIENT_DEADLINE_TIMEOUTS_TOTAL,
                "Attempts that ran out of the client's own deadline (not held against the worker)",
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    names::ROUTER_UPSTREAM_DURATION_SECONDS,
                    "Time of one attempt on one worker, by worker",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["worker"],
            )?,
            upstream_requests: IntCounterVec::new(
                Opts::new(
                    names::ROUTER_UPSTREAM_REQUESTS_TOTAL,
                    "Attempts sent to workers, by result (ok, client_error, server_error, connect_error, timeout, broken)",
                ),
                &["result"],
            )?,
            in_flight: IntGauge::new(names::ROUTER_IN_FLIGHT, "Public API requests being handled")?,
            tenant_limited: IntCounterVec::new(
                Opts::new(
                    names::ROUTER_TENANT_LIMITED_TOTAL,
                    "Requests refused with 429 by a tenant's limit, by limit (in_flight, rate)",
                ),
                &["limit"],
            )?,
            inflight_bytes: IntGauge::new(
                names::ROUTER_INFLIGHT_BODY_BYTES,
                "Request body bytes reserved by requests in flight, under --max-inflight-bytes",
            )?,
            inflight_bytes_refused: IntCounter::new(
                names::ROUTER_INFLIGHT_BYTES_REFUSED_TOTAL,
                "Requests refused with 503 because their body did not fit under --max-inflight-bytes",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(names::BUILD_INFO, "Build of this component (always 1)"),
                &["component", "version"],
            )?,
            shadow: crate::shadow::ShadowMetrics::register(registry, per_model)?,
            plain: None,
            upstream_by_result: vec![],
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.retries_refused.clone()))?;
        registry.register(Box::new(m.client_deadline_timeouts.clone()))?;
        registry.register(Box::new(m.upstream_duration.clone()))?;
        registry.register(Box::new(m.upstream_requests.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.tenant_limited.clone()))?;
        registry.register(Box::new(m.inflight_bytes.clone()))?;
        registry.register(Box::new(m.inflight_bytes_refused.clone()))?;
        registry.register(Box::new(m.build_info.clone()))?;
        m.build_info
            .with_label_values(&["router", env!("CARGO_PKG_VERSION")])
            .set(1);
        // Both limits exist from the start (at 0), so the first 429 shows in `rate`.
        for limit in ["in_flight", "rate"] {
            m.tenant_limited.with_label_values(&[limit]);
        }
        let mut m = m;
        m.upstream_by_result = UPSTREAM_RESULTS
            .iter()
            .map(|r| m.upstream_requests.with_label_values(&[*r]))
            .collect();
        if !per_model {
            m.plain = Some((
                m.requests.with_label_values(&["200"]),
                m.request_duration.with_label_values::<&str>(&[]),
            ));
        }
        Ok(m)
    }

    /// The `upstream_requests` series for `result` (the labels are a fixed set, so the
    /// handles are resolved once).
    pub fn upstream_result(&self, result: &'static str) -> &IntCounter {
        let i = UPSTREAM_RESULTS
            .iter()
            .position(|r| *r == result)
            .unwrap_or(UPSTREAM_RESULTS.len() - 1);
        &self.upstream_by_result[i]
    }

    /// Whether request metrics carry a `model` label.
    pub fn per_model(&self) -> bool {
        self.plain.is_none()
    }

    /// Counts one answered request.
    pub fn answered(&self, model: Option<&ModelKey>, code: u16, seconds: f64) {
        match &self.plain {
            Some((ok, duration)) => {
                if code == 200 {
                    ok.inc();
                } else {
                    self.requests.with_label_values(&[&code.to_string()]).inc();
                }
                duration.observe(seconds);
            }
            None => {
                let model = model.map(ModelKey::shard_key).unwrap_or_default();
                self.requests
                    .with_label_values(&[&code.to_string(), &model])
                    .inc();
                self.request_duration
                    .with_label_values(&[&model])
                    .observe(seconds);
            }
        }
    }
}
