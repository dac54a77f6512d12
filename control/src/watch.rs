//! The watched snapshot: a background task that keeps an `Arc<Snapshot>` current.
//!
//! It lists the prefix at revision R, watches from R+1, applies each batch of events
//! and publishes a new immutable snapshot (swapped atomically through a
//! `tokio::sync::watch` channel). When the watch breaks it reconnects from the last
//! revision seen, with exponential backoff; when that revision was compacted it re-lists.
//! Before each reconnect it asks etcd where it is ([`KvStore::position`]): a store whose
//! revision went back below the snapshot's, or another cluster, was restored from a
//! backup, and the snapshot is re-listed too (watching from the old revision would wait
//! for a revision the restored history reaches with different data).
//! While etcd is unreachable consumers keep the last snapshot (static stability) and
//! the metrics say how stale it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shardline_shared::compat::Ignored;
use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::{Change, Invalid, Listing, Snapshot};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::ControlMetrics;
use crate::store::{Event, KvStore, StoreError, WatchItem};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Owner of the background watch task; dropping it stops the task.
#[derive(Debug)]
pub struct SnapshotWatcher {
    rx: watch::Receiver<Arc<Snapshot>>,
    clock: Arc<ContactClock>,
    task: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl Drop for SnapshotWatcher {
    fn drop(&mut self) {
        self.task.abort();
        self.ticker.abort();
    }
}

/// When etcd last confirmed the snapshot current, as milliseconds since `base`.
#[derive(Debug)]
struct ContactClock {
    base: Instant,
    last_ms: AtomicU64,
}

impl ContactClock {
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl SnapshotWatcher {
    /// Starts watching `prefix`. The first snapshot (revision > 0) is published once the
    /// first listing succeeds; until then [`SnapshotWatcher::current`] is empty at revision 0.
    pub fn spawn(store: Arc<dyn KvStore>, prefix: Prefix, metrics: ControlMetrics) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(prefix.clone())));
        let clock = Arc::new(ContactClock {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let ticker = tokio::spawn({
            let (clock, gauge) = (clock.clone(), metrics.snapshot_age_seconds.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(250));
                loop {
                    every.tick().await;
                    gauge.set(clock.age().as_secs_f64());
                }
            }
        });
        let out = Publisher {
            tx,
            metrics,
            clock: clock.clone(),
        };
        let task = tokio::spawn(run(store, prefix, out));
        Self {
            rx,
            clock,
            task,
            ticker,
        }
    }

    /// Time since etcd last confirmed the snapshot current (a listing, events or a
    /// progress notification). Grows while etcd is unreachable.
    pub fn age(&self) -> Duration {
        self.clock.age()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// A receiver that is notified on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// Waits until the snapshot reflects at least `revision`.
    pub async fn wait_for_revision(&self, revision: i64) -> Arc<Snapshot> {
        let mut rx = self.rx.clone();
        match rx.wait_for(|s| s.revision() >= revision).await {
            Ok(s) => s.clone(),
            // The task never drops its sender while `self` lives.
            Err(_) => self.current(),
        }
    }

    /// Waits for the first successful listing.
    pub async fn ready(&self) -> Arc<Snapshot> {
        self.wait_for_revision(1).await
    }
}

fn invalid_kind(prefix: &Prefix, key: &str) -> &'static str {
    let rest = key.strip_prefix(prefix.root()).unwrap_or("");
    match rest.split('/').next() {
        Some("workers") => "worker",
        Some("resident") => "resident",
        Some("worker-admin") => "worker_admin",
        Some("tenants") => "tenant",
        Some("models") => "model",
        Some("assignments") => "assignment",
        Some("placement") => "placement",
        Some("controller") => "controller",
        _ => "unknown",
    }
}

/// Counts a value read without what this release does not know; logs the first of each
/// key kind (the counter at 0 is the memory of "not logged yet"), so an upgrade that adds
/// a field to every tenant logs one line, not one per tenant.
fn note_ignored(prefix: &Prefix, metrics: &ControlMetrics, key: &str, ignored: &Ignored) {
    let kind = invalid_kind(prefix, key);
    let counter = metrics.ignored_fields.with_label_values(&[kind]);
    if counter.get() == 0 {
        warn!(
            key,
            kind,
            ignored = %ignored,
            "using a control-plane value without what this release does not know \
             (written by a newer release?); logged once per key kind"
        );
    }
    counter.inc();
}

fn report(prefix: &Prefix, metrics: &ControlMetrics, invalid: &Invalid) {
    metrics
        .invalid_values
        .with_label_values(&[invalid_kind(prefix, &invalid.key)])
        .inc();
    warn!(key = %invalid.key, reason = %invalid.reason, "ignoring invalid control-plane value");
}

struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
    metrics: ControlMetrics,
    clock: Arc<ContactClock>,
}

impl Publisher {
    fn publish(&mut self, snap: &Snapshot) {
        self.metrics.snapshot_revision.set(snap.revision());
        self.touch();
        self.tx.send_replace(Arc::new(snap.clone()));
    }

    fn touch(&mut self) {
        self.clock.touch();
        self.metrics.snapshot_age_seconds.set(0.0);
    }
}

async fn run(store: Arc<dyn KvStore>, prefix: Prefix, mut out: Publisher) {
    let metrics = out.metrics.clone();
    let mut snap: Option<Snapshot> = None;
    // The cluster the snapshot was listed from (asked before the listing, so a restore
    // in between costs one more re-list, never a missed one).
    let mut cluster = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        let current = match snap.take() {
            Some(s) => s,
            None => match listed(&*store, &prefix, &metrics).await {
                Ok((at, s, invalid)) => {
                    cluster = at;
                    invalid.iter().for_each(|i| report(&prefix, &metrics, i));
                    metrics.resyncs.inc();
                    info!(revision = s.revision(), "control-plane snapshot listed");
                    out.publish(&s);
                    s
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "listing the control plane failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let (next, healthy) = follow(&*store, &prefix, cluster, current, &mut out).await;
        metrics.watch_connected.set(0);
        snap = next;
        if healthy {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// The cluster id, then a snapshot of `prefix` built page by page as the listing
/// arrives (never the whole listing in memory), and the keys it refused.
async fn listed(
    store: &dyn KvStore,
    prefix: &Prefix,
    metrics: &ControlMetrics,
) -> Result<(u64, Snapshot, Vec<Invalid>), StoreError> {
    let at = store.position().await?;
    let mut listing = Listing::new(prefix.clone());
    let mut invalid = Vec::new();
    let revision = store
        .list_pages(prefix.root(), &mut |page| {
            for kv in page {
                match listing.put(&kv.key, &kv.value, kv.mod_revision) {
                    Ok(None) => {}
                    Ok(Some(ignored)) => note_ignored(prefix, metrics, &kv.key, &ignored),
                    Err(e) => invalid.push(e),
                }
            }
        })
        .await?;
    let snap = listing.finish(revision);
    Ok((at.cluster, snap, invalid))
}

/// Follows one watch stream. Returns the snapshot to continue from (`None` = re-list)
/// and whether the stream delivered anything (to reset the backoff).
async fn follow(
    store: &dyn KvStore,
    prefix: &Prefix,
    cluster: u64,
    mut snap: Snapshot,
    out: &mut Publisher,
) -> (Option<Snapshot>, bool) {
    match store.position().await {
        Ok(at) if at.went_back_from(cluster, snap.revision()) => {
            warn!(
                snapshot_revision = snap.revision(),
                store_revision = at.revision,
                cluster = format_args!("{cluster:x}"),
                store_cluster = format_args!("{:x}", at.cluster),
                "etcd went back (restored from a backup?); re-listing"
            );
            return (None, true);
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "etcd unreachable; serving the last snapshot");
            return (Some(snap), false);
        }
    }
    let from = snap.revision() + 1;
    let mut stream = match store.watch(prefix.root(), from).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "watching the control plane failed; serving the last snapshot");
            return (Some(snap), false);
        }
    };
    out.metrics.watch_connected.set(1);
    debug!(from, "watching control plane");
    let mut healthy = false;
    loop {
        match stream.next().await {
            Some(Ok(WatchItem::Batch { revision, events })) => {
                healthy = true;
                if events.is_empty() {
                    out.touch();
                    continue;
                }
                for e in &events {
                    let change = match e {
                        Event::Put(kv) => Change::Put {
                            key: &kv.key,
                            value: &kv.value,
                            mod_revision: kv.mod_revision,
                        },
                        Event::Delete { key, .. } => Change::Delete { key },
                    };
                    match snap.apply_noting(change) {
                        Ok(None) => {}
                        Ok(Some(ignored)) => {
                            note_ignored(prefix, &out.metrics, e.key(), &ignored);
                        }
                        Err(invalid) => report(prefix, &out.metrics, &invalid),
                    }
                }
                let last_event = events.iter().map(Event::mod_revision).max().unwrap_or(0);
                snap.set_revision(revision.max(last_event).max(snap.revision()));
                out.publish(&snap);
            }
            Some(Ok(WatchItem::Compacted { compact_revision })) => {
                warn!(
                    from,
                    compact_revision, "watch start revision was compacted; re-listing"
                );
                return (None, true);
            }
            Some(Err(e)) => {
                warn!(error = %e, "control-plane watch broke; reconnecting");
                return (Some(snap), healthy);
            }
            None => {
                warn!("control-plane watch ended; reconnecting");
                return (Some(snap), healthy);
            }
        }
    }
}
