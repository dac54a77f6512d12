//! What every request handler shares: the control-plane snapshot, the upstream (the
//! pooled client to workers in production, a double in tests), worker health,
//! per-tenant admission gates, the retry budget, limits and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use shardline_shared::ids::TenantId;
use shardline_shared::records::TenantLimits;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::watch;

use crate::budget::{RetryBudget, TenantRetries};
use crate::error::RouterError;
use crate::health::{Fleet, get_or_default};
use crate::inflight::{ByteBudget, Reservation, bytes_to_reserve};
use crate::limiter::{InFlight, RateBucket, Refusal, admit};
use crate::metrics::RouterMetrics;
use crate::shadow::{ShadowLimits, Shadows};
use crate::upstream::WorkerClient;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub max_rows: usize,
    pub default_deadline: Duration,
    pub max_deadline: Duration,
    pub attempt_timeout: Duration,
    /// Request body bytes all requests in flight may hold at once (see [`crate::inflight`]).
    pub max_inflight_bytes: u64,
}

/// One tenant's admission state on this router, and its share of retries.
#[derive(Debug, Default)]
pub struct TenantGate {
    in_flight: InFlight,
    bucket: Mutex<RateBucket>,
    pub retries: TenantRetries,
}

/// A tenant's admission: holds one of its in-flight slots (when it has limits) until
/// dropped, and its gate (for its retries).
#[derive(Debug)]
pub struct TenantPermit {
    gate: Arc<TenantGate>,
    entered: bool,
}

impl TenantPermit {
    pub fn gate(&self) -> &TenantGate {
        &self.gate
    }
}

impl Drop for TenantPermit {
    fn drop(&mut self) {
        if self.entered {
            self.gate.in_flight.leave();
        }
    }
}

/// Shared by all handlers. `U` sends attempts to workers: [`WorkerClient`] unless a
/// test says otherwise.
#[derive(Debug)]
pub struct AppState<U = WorkerClient> {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub upstream: U,
    pub fleet: Fleet,
    pub budget: Mutex<RetryBudget>,
    pub limits: Limits,
    pub metrics: RouterMetrics,
    /// Body bytes of the requests in flight, under `limits.max_inflight_bytes`.
    pub inflight: ByteBudget,
    /// Sampled requests waiting to be copied to a shadow version ([`crate::shadow`]).
    pub shadow: Shadows,
    gates: RwLock<HashMap<TenantId, Arc<TenantGate>>>,
}

impl<U> AppState<U> {
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        upstream: U,
        budget: RetryBudget,
        limits: Limits,
        metrics: RouterMetrics,
    ) -> Self {
        let inflight = ByteBudget::new(limits.max_inflight_bytes, metrics.inflight_bytes.clone());
        Self {
            snapshot,
            upstream,
            fleet: Fleet::default(),
            budget: Mutex::new(budget),
            limits,
            metrics,
            inflight,
            shadow: Shadows::new(ShadowLimits::default()),
            gates: RwLock::default(),
        }
    }

    /// The same state with `limits` on shadow work.
    pub fn with_shadow_limits(mut self, limits: ShadowLimits) -> Self {
        self.shadow = Shadows::new(limits);
        self
    }

    /// The current snapshot (a cheap `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Admits one request of `tenant` under `limits`, or refuses it with 429.
    pub fn admit(
        &self,
        tenant: &TenantId,
        limits: TenantLimits,
        now: Instant,
    ) -> Result<TenantPermit, RouterError> {
        let gate = self.gate(tenant);
        if limits.max_in_flight == 0 && limits.rate_per_sec == 0 {
            return Ok(TenantPermit {
                gate,
                entered: false,
            });
        }
        let admitted = admit(
            &gate.in_flight,
            &mut gate.bucket.lock().unwrap_or_else(PoisonError::into_inner),
            now,
            limits,
        );
        match admitted {
            Ok(()) => Ok(TenantPermit {
                gate,
                entered: true,
            }),
            Err(r) => {
                let (label, message, retry_after) = match r {
                    Refusal::InFlight { limit } => (
                        "in_flight",
                        format!("tenant has {limit} requests in flight on this router, its limit"),
                        Duration::from_secs(1),
                    ),
                    Refusal::Rate { limit, retry_after } => (
                        "rate",
                        format!("tenant is over its limit of {limit} requests per second"),
                        retry_after,
                    ),
                };
                self.metrics
                    .tenant_limited
                    .with_label_values(&[label])
                    .inc();
                Err(RouterError::TooManyRequests {
                    message,
                    retry_after,
                })
            }
        }
    }

    /// Reserves the body bytes of a request declaring `content_length` (see
    /// [`crate::inflight`]), or refuses it with 503.
    pub fn reserve_body(
        &self,
        content_length: Option<u64>,
    ) -> Result<Reservation<'_>, RouterError> {
        let max_body = u64::try_from(self.limits.max_body).unwrap_or(u64::MAX);
        self.inflight
            .try_reserve(bytes_to_reserve(content_length, max_body))
            .map_err(|refused| {
                self.metrics.inflight_bytes_refused.inc();
                RouterError::Unavailable(format!(
                    "request bodies in flight on this router are at its limit of {} bytes; \
                     retry shortly",
                    refused.limit
                ))
            })
    }

    fn gate(&self, tenant: &TenantId) -> Arc<TenantGate> {
        get_or_default(&self.gates, tenant)
    }

    /// Drops gates of tenants that no longer exist (keeps the map bounded).
    pub fn retain_tenants(&self, exists: impl Fn(&TenantId) -> bool) {
        self.gates
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|t, _| exists(t));
    }
}
