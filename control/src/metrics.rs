//! Metrics of the control-plane client, registered into a registry the caller owns.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use shardline_shared::metrics as names;

/// Values of `invalid_values_total{kind}` and `ignored_fields_total{kind}` (see
/// `watch::invalid_kind`).
const INVALID_KINDS: [&str; 9] = [
    "worker",
    "resident",
    "worker_admin",
    "tenant",
    "model",
    "assignment",
    "placement",
    "controller",
    "unknown",
];

/// Counters and gauges updated by the watcher and the lease keeper.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    pub snapshot_revision: IntGauge,
    pub snapshot_age_seconds: Gauge,
    pub watch_connected: IntGauge,
    pub resyncs: IntCounter,
    pub invalid_values: IntCounterVec,
    pub ignored_fields: IntCounterVec,
    pub lease_registrations: IntCounter,
}

impl ControlMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.snapshot_revision.clone()))?;
        registry.register(Box::new(m.snapshot_age_seconds.clone()))?;
        registry.register(Box::new(m.watch_connected.clone()))?;
        registry.register(Box::new(m.resyncs.clone()))?;
        registry.register(Box::new(m.invalid_values.clone()))?;
        registry.register(Box::new(m.ignored_fields.clone()))?;
        registry.register(Box::new(m.lease_registrations.clone()))?;
        // Every kind exists from the start (at 0), so the first invalid value shows in
        // `rate` and dashboards show 0 rather than no data.
        for kind in INVALID_KINDS {
            m.invalid_values.with_label_values(&[kind]);
            m.ignored_fields.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// Metrics that go nowhere (tools and tests that do not export metrics).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            snapshot_revision: IntGauge::new(
                names::CONTROL_SNAPSHOT_REVISION,
                "etcd revision reflected by this process's control-plane snapshot",
            )?,
            snapshot_age_seconds: Gauge::new(
                names::CONTROL_SNAPSHOT_AGE_SECONDS,
                "Seconds since the snapshot was last confirmed current by etcd",
            )?,
            watch_connected: IntGauge::new(
                names::CONTROL_WATCH_CONNECTED,
                "1 while the etcd watch is established, 0 while serving a possibly stale snapshot",
            )?,
            resyncs: IntCounter::new(
                names::CONTROL_RESYNCS_TOTAL,
                "Full re-lists of the control plane (start, compaction, reconnect gaps)",
            )?,
            invalid_values: IntCounterVec::new(
                Opts::new(
                    names::CONTROL_INVALID_VALUES_TOTAL,
                    "etcd values refused by the snapshot (treated as absent), by key kind",
                ),
                &["kind"],
            )?,
            ignored_fields: IntCounterVec::new(
                Opts::new(
                    names::CONTROL_IGNORED_FIELDS_TOTAL,
                    "etcd values used without fields or enum values this release does not know \
                     (written by a newer release), by key kind",
                ),
                &["kind"],
            )?,
            lease_registrations: IntCounter::new(
                names::CONTROL_LEASE_REGISTRATIONS_TOTAL,
                "Times a worker (re)registered under a fresh lease",
            )?,
        })
    }
}
