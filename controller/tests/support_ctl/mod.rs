//! A control plane with real neighbours for the controller's tests: etcd
//! (`EtcdProcess`), a `file://` model store in a temp dir, real workers (`serve()` on
//! loopback) and routers that run only their placement controller.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shardline_artifacts::ArtifactStore;
use shardline_control::{ControlMetrics, ControlPlane, EtcdStore, SnapshotWatcher};
use shardline_controller::{Controller, ControllerConfig, ControllerMetrics};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Prefix;
use shardline_shared::records::{Assignment, PlacementConfig};
use shardline_shared::snapshot::Snapshot;
use shardline_testkit::EtcdProcess;
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::models::publish::publish;
use shardline_worker::config::WorkerArgs;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-internal-token-0123";

/// Etcd, a model store, a control plane and a snapshot watcher of the test's own.
pub struct Fleet {
    pub etcd: EtcdProcess,
    pub dir: tempfile::TempDir,
    pub cp: ControlPlane,
    pub store: ArtifactStore,
    pub watcher: SnapshotWatcher,
}

impl Fleet {
    pub async fn start() -> Self {
        let etcd = EtcdProcess::start().await.unwrap();
        let etcd_store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
        let cp = ControlPlane::new(etcd_store.clone(), Prefix::default());
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::from_url(&Self::url(&dir)).unwrap();
        let watcher = SnapshotWatcher::spawn(
            etcd_store,
            Prefix::default(),
            ControlMetrics::unregistered().unwrap(),
        );
        watcher.ready().await;
        Self {
            etcd,
            dir,
            cp,
            store,
            watcher,
        }
    }

    fn url(dir: &tempfile::TempDir) -> String {
        format!("file://{}", dir.path().display())
    }

    /// Sets the placement default shard size (before any controller starts).
    pub async fn placement_k(&self, k: u32) {
        let config = PlacementConfig {
            default_k: k,
            ..PlacementConfig::default()
        };
        self.cp.write_placement(&config, None).await.unwrap();
    }

    /// Uploads a small MLP and registers it as the live version.
    pub async fn publish(&self, tenant: &str, model: &str, version: &str) -> ModelKey {
        let m = MlpArtifact::random(&[4, 8, 1], 1);
        publish(&self.store, &self.cp, tenant, model, version, &m)
            .await
            .unwrap()
            .key()
    }

    /// Starts a worker (`serve()`), registered under a 2 s lease.
    pub async fn worker(&self, id: &str) -> Worker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let args = WorkerArgs::try_parse_from([
            "worker",
            "--listen",
            &addr.to_string(),
            "--etcd",
            &self.etcd.endpoint(),
            "--store",
            &Self::url(&self.dir),
            "--memory-budget",
            "64MiB",
            "--idle-ttl",
            "10m",
            "--id",
            id,
            "--internal-token",
            TOKEN,
            "--lease-ttl",
            "2s",
        ])
        .unwrap();
        let config = args.validate().unwrap();
        let store = ArtifactStore::from_url(&Self::url(&self.dir)).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            shardline_worker::serve::serve(config, store, listener, None, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let worker = Worker {
            id: id.into(),
            addr,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(tx),
            task,
        };
        worker.wait_ready().await;
        worker
    }

    /// A router replica running only its controller, with its own snapshot watcher.
    pub async fn router(&self, id: &str, lease_ttl: Duration) -> RouterReplica {
        let store = Arc::new(EtcdStore::connect(&[self.etcd.endpoint()]).await.unwrap());
        let watcher = SnapshotWatcher::spawn(
            store.clone(),
            Prefix::default(),
            ControlMetrics::unregistered().unwrap(),
        );
        let cp = ControlPlane::new(store, Prefix::default());
        let config = ControllerConfig {
            lease_ttl,
            previous_grace: Duration::from_secs(3),
            prefetch_timeout: Duration::from_secs(10),
            ..ControllerConfig::new(id, TOKEN)
        };
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

/// Polls `check` every 50 ms until it returns true; panics after `limit`.
pub async fn eventually<F: Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not true within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A router replica; dropping it is a crash (its lease is left to expire).
pub struct RouterReplica {
    pub controller: Controller,
    pub registry: prometheus::Registry,
    _watcher: SnapshotWatcher,
}

impl RouterReplica {
    /// The value of a gauge or counter of this replica's registry (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
            .sum()
    }
}

/// A running worker.
pub struct Worker {
    pub id: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Worker {
    async fn wait_ready(&self) {
        for _ in 0..200 {
            let r = self
                .http
                .get(format!("http://{}/v2/health/ready", self.addr))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("worker never became ready");
    }

    /// Names (`tenant.model`) of the models resident now, from `/v2/repository/index`.
    pub async fn resident(&self) -> Vec<String> {
        let resp = self
            .http
            .get(format!("http://{}/v2/repository/index", self.addr))
            .header("x-shardline-token", TOKEN)
            .send()
            .await
            .unwrap();
        let list: Vec<serde_json::Value> = resp.json().await.unwrap();
        list.iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Graceful stop: the worker revokes its lease.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}
