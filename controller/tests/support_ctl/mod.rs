//! The controller's suite on the test kit's one fleet (etcd, a `file://` model store,
//! workers run by the worker's `serve()` in the test process), plus what only this
//! suite needs: router replicas that run nothing but their placement controller, and a
//! snapshot watcher of the test's own.
#![allow(dead_code, clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Encoder as _, TextEncoder};
use shardline_artifacts::StoreOptions;
use shardline_control::{ControlMetrics, ControlPlane, EtcdStore, SnapshotWatcher};
use shardline_controller::{Controller, ControllerConfig, ControllerMetrics};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Prefix;
use shardline_shared::records::Assignment;
use shardline_shared::snapshot::Snapshot;
use shardline_testkit::TOKEN;
use shardline_testkit::fleet::{Launch, Launcher, Node, TestFleet};
use shardline_testkit::models::MlpArtifact;

/// Runs a worker in this process on the binary's argument list (no `/metrics`).
pub fn launch_worker() -> Launcher {
    Launcher::new(|start| async move {
        let options = StoreOptions::default().with_process_env();
        shardline_worker::serve::serve_command_line(
            &start.args,
            options,
            start.listener,
            None,
            start.shutdown,
        )
        .await
    })
}

/// The test kit's fleet (no worker or router started) and a snapshot watcher.
pub struct Fleet {
    pub fleet: TestFleet,
    pub watcher: SnapshotWatcher,
}

impl Deref for Fleet {
    type Target = TestFleet;
    fn deref(&self) -> &TestFleet {
        &self.fleet
    }
}

impl Fleet {
    pub async fn start() -> Self {
        let fleet = TestFleet::builder()
            .workers(0)
            .routers(0)
            .memory_budget("64MiB")
            .lease_ttl("2s")
            .in_process(Launch::workers(launch_worker()))
            .start()
            .await;
        let watcher = SnapshotWatcher::spawn(
            Arc::new(EtcdStore::connect(&[fleet.etcd.endpoint()]).await.unwrap()),
            Prefix::default(),
            ControlMetrics::unregistered().unwrap(),
        );
        watcher.ready().await;
        Self { fleet, watcher }
    }

    /// Uploads a small MLP `4 → 8 → 1` and registers it as the live version.
    pub async fn publish(&self, tenant: &str, model: &str, version: &str) -> ModelKey {
        let m = MlpArtifact::random(&[4, 8, 1], 1);
        let manifest = self.fleet.publish_model(tenant, model, version, &m).await;
        manifest.key()
    }

    /// Starts worker `id` (64 MiB, registered under a 2 s lease).
    pub async fn worker(&self, id: &str) -> Node {
        self.fleet.start_node(self.fleet.worker_spec(id)).await
    }

    /// A router replica running only its controller, with its own snapshot watcher
    /// (controller defaults, so balancing at 60 moves a minute).
    pub async fn router(&self, id: &str, lease_ttl: Duration) -> RouterReplica {
        self.router_with(id, lease_ttl, |_| {}).await
    }

    /// [`router`](Self::router) with its controller's configuration changed by `tune`.
    pub async fn router_with(
        &self,
        id: &str,
        lease_ttl: Duration,
        tune: impl FnOnce(&mut ControllerConfig),
    ) -> RouterReplica {
        let store = Arc::new(EtcdStore::connect(&[self.etcd.endpoint()]).await.unwrap());
        let watcher = SnapshotWatcher::spawn(
            store.clone(),
            Prefix::default(),
            ControlMetrics::unregistered().unwrap(),
        );
        let cp = ControlPlane::new(store, Prefix::default());
        let mut config = ControllerConfig {
            lease_ttl,
            previous_grace: Duration::from_secs(3),
            prefetch_timeout: Duration::from_secs(10),
            ..ControllerConfig::new(id, TOKEN)
        };
        tune(&mut config);
        let registry = prometheus::Registry::new();
        let metrics = ControllerMetrics::register(&registry).unwrap();
        let controller = Controller::spawn(cp, watcher.subscribe(), config, metrics);
        RouterReplica {
            controller,
            registry,
            _watcher: watcher,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.watcher.current()
    }

    pub fn assignment(&self, model: &ModelKey) -> Option<Assignment> {
        self.snapshot()
            .assignments()
            .get(model)
            .map(|a| a.value.clone())
    }

    /// Waits (up to `limit`) for the snapshot to satisfy `ok`; returns it and the time taken.
    pub async fn wait_for(
        &self,
        limit: Duration,
        mut ok: impl FnMut(&Snapshot) -> bool,
    ) -> (Arc<Snapshot>, Duration) {
        let started = Instant::now();
        let mut rx = self.watcher.subscribe();
        let found = tokio::time::timeout(limit, async {
            rx.wait_for(|s| ok(s)).await.map(|s| s.clone())
        })
        .await;
        match found {
            Ok(Ok(s)) => (s, started.elapsed()),
            _ => panic!(
                "condition not met within {limit:?}; assignments: {:?}",
                self.snapshot().assignments()
            ),
        }
    }

    /// The etcd revision now.
    pub async fn revision(&self) -> i64 {
        self.cp.store().list("/shardline/").await.unwrap().revision
    }
}

/// A router replica; dropping it is a crash (its lease is left to expire).
pub struct RouterReplica {
    pub controller: Controller,
    pub registry: prometheus::Registry,
    _watcher: SnapshotWatcher,
}

impl RouterReplica {
    /// The sum of a gauge or counter of this replica's registry (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .unwrap();
        shardline_testkit::metric_sum(&String::from_utf8(text).unwrap(), name, None)
    }
}
