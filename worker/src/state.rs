//! What every request handler shares: the control-plane snapshot, the model cache and
//! its loader (fetch → verify → build), limits, and metrics.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shardline_shared::echo::Echo;
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::manifest::{Manifest, ModelConfig};
use shardline_shared::snapshot::Snapshot;
use tokio::sync::{Notify, watch};

use crate::activations::Activations;
use crate::blocking::Blocking;
use crate::cache::{CacheEvents, EvictReason, Lease, LoadSize, ModelCache, Weighted};
use crate::error::{ApiError, LoadError};
use crate::metrics::WorkerMetrics;
use shardline_artifacts::ArtifactStore;
use shardline_model::MlpModel;

/// Longest a request waits for this worker's snapshot to reach the router's revision.
const MAX_REVISION_WAIT: Duration = Duration::from_secs(2);

/// A resident model version, the cache's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadedKey {
    pub model: ModelKey,
    pub version: VersionId,
}

impl fmt::Display for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.model, self.version)
    }
}

/// A built model and the manifest it was built from.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: MlpModel,
    pub manifest: Arc<Manifest>,
}

impl Weighted for LoadedModel {
    fn resident_bytes(&self) -> u64 {
        self.model.resident_bytes()
    }
}

/// The worker's model cache.
pub type Cache = ModelCache<LoadedKey, LoadedModel, LoadError>;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub max_rows: usize,
    pub max_in_flight_per_model: u32,
    /// How long a cold request waits for memory held by in-flight requests (and a
    /// request for inference memory held by others).
    pub room_wait: Duration,
    /// Bytes of activations forward passes may hold at once (`--inference-memory`).
    pub inference_memory: u64,
    /// Blocking work running at once (`--max-blocking`) and waiting besides
    /// (`--max-blocking-queue`); see [`crate::blocking`].
    pub max_blocking: usize,
    pub max_blocking_queue: usize,
}

/// Shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub cache: Cache,
    pub store: ArtifactStore,
    pub metrics: WorkerMetrics,
    /// The internal tokens accepted (`--internal-token`, comma-separated), each compared
    /// in constant time with `x-shardline-token`.
    pub tokens: Vec<String>,
    pub limits: Limits,
    /// Inference memory: activations of forward passes in progress.
    pub activations: Activations,
    /// Model builds and large forward passes, bounded.
    pub blocking: Blocking,
    /// True once registered in etcd with a snapshot loaded.
    pub ready: AtomicBool,
    /// Signalled when the resident set may have changed (to republish it).
    pub resident_changed: Arc<Notify>,
    in_flight: Mutex<HashMap<ModelKey, u32>>,
}

impl AppState {
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        cache: Cache,
        store: ArtifactStore,
        metrics: WorkerMetrics,
        token: String,
        limits: Limits,
        resident_changed: Arc<Notify>,
    ) -> Self {
        let activation_bytes = metrics.activation_bytes.clone();
        let blocking = Blocking::new(
            limits.max_blocking,
            limits.max_blocking_queue,
            metrics.blocking_work.clone(),
            metrics.blocking_refused.clone(),
        );
        Self {
            snapshot,
            cache,
            store,
            metrics,
            tokens: shardline_shared::wire::token_list(&token),
            limits,
            activations: Activations::new(limits.inference_memory, activation_bytes),
            blocking,
            ready: AtomicBool::new(false),
            resident_changed,
            in_flight: Mutex::default(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Finds the manifest for `name` (`tenant.model`) and an optional version (else the
    /// live one) in the current snapshot.
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<Manifest>, ApiError> {
        // Names come from the path: echoed bounded (a path may be 64 KiB long).
        let shown = Echo(name);
        let unknown = || ApiError::not_found(format!("model {shown} not found"));
        let (tenant, model) = name.split_once('.').ok_or_else(unknown)?;
        let key = ModelKey::parse_shard_key(&format!("{tenant}/{model}")).map_err(|_| unknown())?;
        let snap = self.snapshot.borrow().clone();
        let entry = snap.model(&key).ok_or_else(unknown)?;
        let manifest = match version {
            Some(v) => {
                let v = VersionId::new(v).map_err(|_| unknown())?;
                entry.versions.get(&v).map(|m| &m.value).ok_or_else(|| {
                    ApiError::not_found(format!("model {shown} has no version {v:?}"))
                })?
            }
            None => entry.live_manifest().ok_or_else(unknown)?,
        };
        Ok(Arc::new(manifest.clone()))
    }

    /// Waits (up to `MAX_REVISION_WAIT`) until this worker's snapshot has reached
    /// `revision`: a router pins the version it resolved at its own snapshot's revision,
    /// which may be ahead of ours by a watch event, so a just-published version is not
    /// answered with 404 here.
    pub async fn catch_up(&self, revision: Option<i64>) {
        let Some(wanted) = revision else { return };
        if self.snapshot.borrow().revision() >= wanted {
            return;
        }
        let mut rx = self.snapshot.clone();
        let _ =
            tokio::time::timeout(MAX_REVISION_WAIT, rx.wait_for(|s| s.revision() >= wanted)).await;
    }

    /// Counts a request against its model's in-flight limit (429 past it).
    pub fn admit(self: &Arc<Self>, model: &ModelKey) -> Result<InFlight, ApiError> {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(model.clone()).or_insert(0);
        if *n >= self.limits.max_in_flight_per_model {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("model {model} has {n} requests in flight on this worker"),
            ));
        }
        *n += 1;
        self.metrics
            .in_flight
            .with_label_values(&self.metrics.model_labels(model))
            .inc();
        Ok(InFlight {
            state: self.clone(),
            model: model.clone(),
        })
    }

    /// Leases the model, loading it (once, whatever the concurrency) if needed.
    ///
    /// A load runs in its own task: a request that gives up (its client left, or its
    /// deadline passed) stops waiting, but the load it started goes on to the end with
    /// its memory reserved, so it is never abandoned half-way (its bytes still in use
    /// while a second load of the same model reserves them again), and a model slower to
    /// load than its clients' deadlines still becomes resident.
    pub async fn lease(&self, manifest: Arc<Manifest>) -> Result<Lease<LoadedModel>, ApiError> {
        // A version a newer release published (an activation this release does not
        // compute): known, but not built here. 502 is final for this worker and not a
        // fault of the worker's health: the router tries the next member, which may
        // run the newer release.
        if let Err(e) = manifest.config.check_supported() {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                format!("this worker's release cannot build this model version: {e}"),
            ));
        }
        let key = LoadedKey {
            model: manifest.key(),
            version: manifest.version.clone(),
        };
        if let Some(lease) = self.cache.try_lease(&key) {
            return Ok(lease);
        }
        let resident = manifest.weight_bytes();
        // The fetched file and the built tensors coexist while building.
        let size = LoadSize {
            // Sizes come from etcd: a hostile or broken value saturates (and is then
            // refused as larger than the budget) instead of wrapping past the check.
            transient: resident
                .saturating_add(manifest.weights_file.size)
                .saturating_add(manifest.config_file.size),
            resident,
        };
        let deadline = tokio::time::Instant::now() + self.limits.room_wait;
        let (cache, store, metrics, blocking) = (
            self.cache.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.blocking.clone(),
        );
        let loading = tokio::spawn(async move {
            cache
                .get_or_load(key, size, deadline, move || {
                    load(store, manifest, metrics, blocking)
                })
                .await
        });
        let lease = loading.await.map_err(|e| {
            ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })??;
        Ok(lease)
    }
}

/// Fetches, verifies and builds one model version, counting the outcome.
async fn load(
    store: ArtifactStore,
    manifest: Arc<Manifest>,
    metrics: WorkerMetrics,
    blocking: Blocking,
) -> Result<LoadedModel, LoadError> {
    let started = Instant::now();
    let result = async {
        let (config_bytes, weights) = store.fetch_model(&manifest).await?;
        let config = ModelConfig::from_json(&config_bytes)
            .map_err(|e| LoadError::Model(shardline_model::ModelError::Manifest(e)))?;
        if config != *manifest.config {
            return Err(LoadError::ConfigMismatch);
        }
        // Never refused: requests wait on this load (see `crate::blocking`).
        let built = blocking
            .admit_always()
            .run(move || MlpModel::from_safetensors(&config, &weights))
            .await
            .map_err(|e| LoadError::Join(e.to_string()))??;
        Ok(LoadedModel {
            model: built,
            manifest: manifest.clone(),
        })
    }
    .await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.result_label(),
    };
    metrics.loads.with_label_values(&[label]).inc();
    metrics
        .load_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        tracing::warn!(model = %manifest.key(), version = %manifest.version, error = %e, "model load failed");
    }
    result
}

/// A request counted against its model's in-flight limit until dropped.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<AppState>,
    model: ModelKey,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        metrics
            .in_flight
            .with_label_values(&metrics.model_labels(&self.model))
            .dec();
        let mut map = self
            .state
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.model) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.model);
            }
        }
    }
}

/// Turns cache events into metrics and republishing of the resident set.
#[derive(Debug)]
pub struct Events {
    pub metrics: WorkerMetrics,
    pub resident_changed: Arc<Notify>,
}

impl CacheEvents<LoadedKey> for Events {
    fn on_load(&self, _key: &LoadedKey, _outcome: crate::cache::LoadOutcome, _took: Duration) {
        self.resident_changed.notify_one();
    }

    fn on_evict(&self, key: &LoadedKey, reason: EvictReason, bytes: u64) {
        let label = match reason {
            EvictReason::Idle => "idle",
            EvictReason::Memory => "memory",
            EvictReason::Explicit => "explicit",
        };
        self.metrics.evictions.with_label_values(&[label]).inc();
        tracing::info!(model = %key, reason = label, bytes, "model evicted");
        self.resident_changed.notify_one();
    }

    fn on_wait(&self, _key: &LoadedKey, waited: Duration) {
        self.metrics.cold_start_wait.observe(waited.as_secs_f64());
    }
}
