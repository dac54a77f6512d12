//! A whole Shardline on loopback: real etcd, a model store (a `file://` directory, or
//! moto's S3), real `worker` and `router` processes, tenants and models published
//! through the control plane, and helpers that score through a router or a worker.

#![allow(
    clippy::unwrap_used,
    missing_debug_implementations,
    reason = "a set-up step that fails fails the test"
)]

pub mod ctl;

use std::time::{Duration, Instant};

use crate::models::{MlpArtifact, publish};
use crate::{EtcdProcess, ManagedProcess, S3Process, free_port};
use serde_json::{Value, json};
use shardline_artifacts::{ArtifactStore, StoreOptions};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::{Key, Prefix};
use shardline_shared::manifest::Manifest;
use shardline_shared::metrics::CONTROL_SNAPSHOT_REVISION;
use shardline_shared::records::{Assignment, TenantLimits};

pub use crate::TOKEN;
pub const DIM: usize = 64;

/// A running worker process.
pub struct WorkerProc {
    pub id: String,
    pub address: String,
    pub metrics_url: String,
    pub process: ManagedProcess,
}

/// A running router process.
pub struct RouterProc {
    pub id: String,
    pub url: String,
    pub metrics_url: String,
    pub process: ManagedProcess,
}

/// How to start a fleet.
pub struct FleetBuilder {
    workers: usize,
    routers: usize,
    lease_ttl: &'static str,
    s3: bool,
    router_args: Vec<String>,
    worker_args: Vec<String>,
    memory_budget: &'static str,
    idle_ttl: &'static str,
}

impl FleetBuilder {
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    pub fn routers(mut self, n: usize) -> Self {
        self.routers = n;
        self
    }
    pub fn s3(mut self) -> Self {
        self.s3 = true;
        self
    }
    pub fn router_arg(mut self, arg: &str) -> Self {
        self.router_args.push(arg.to_owned());
        self
    }
    pub fn worker_arg(mut self, arg: &str) -> Self {
        self.worker_args.push(arg.to_owned());
        self
    }
    /// Every worker's `--memory-budget` (default 256MiB).
    pub fn memory_budget(mut self, budget: &'static str) -> Self {
        self.memory_budget = budget;
        self
    }
    /// Every worker's `--idle-ttl` (default 10m).
    pub fn idle_ttl(mut self, ttl: &'static str) -> Self {
        self.idle_ttl = ttl;
        self
    }

    pub async fn start(self) -> TestFleet {
        let etcd = EtcdProcess::start().await.unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let (s3, store_url, env) = if self.s3 {
            let s3 = S3Process::start().await.unwrap();
            let (url, env) = (s3.store_url(), s3.env());
            (Some(s3), url, env)
        } else {
            let url = format!("file://{}", store_dir.path().display());
            (None, url, vec![])
        };
        let store =
            ArtifactStore::from_url_with(&store_url, StoreOptions::default().with_env(env.clone()))
                .unwrap();
        let etcd_store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
        let cp = ControlPlane::new(std::sync::Arc::new(etcd_store), Prefix::default());
        let mut fleet = TestFleet {
            etcd,
            s3,
            store_dir,
            store,
            store_url,
            store_env: env,
            cp,
            lease_ttl: self.lease_ttl,
            workers: vec![],
            routers: vec![],
            router_args: self.router_args,
            worker_args: self.worker_args,
            memory_budget: self.memory_budget,
            idle_ttl: self.idle_ttl,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for _ in 0..self.workers {
            fleet.add_worker().await;
        }
        for _ in 0..self.routers {
            fleet.add_router().await;
        }
        fleet
    }
}

/// The running fleet; everything stops when it is dropped.
pub struct TestFleet {
    pub etcd: EtcdProcess,
    pub s3: Option<S3Process>,
    pub store_dir: tempfile::TempDir,
    pub store: ArtifactStore,
    pub store_url: String,
    pub store_env: Vec<(String, String)>,
    pub cp: ControlPlane,
    pub lease_ttl: &'static str,
    pub workers: Vec<WorkerProc>,
    pub routers: Vec<RouterProc>,
    router_args: Vec<String>,
    worker_args: Vec<String>,
    memory_budget: &'static str,
    idle_ttl: &'static str,
    pub http: reqwest::Client,
}

impl TestFleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            workers: 2,
            routers: 1,
            lease_ttl: "3s",
            s3: false,
            router_args: vec![],
            worker_args: vec![],
            memory_budget: "256MiB",
            idle_ttl: "10m",
        }
    }

    pub async fn add_worker(&mut self) -> usize {
        let n = self.workers.len();
        let id = format!("w-{n}");
        let (port, metrics_port) = (free_port(), free_port());
        let address = format!("127.0.0.1:{port}");
        let mut process = ManagedProcess::new(id.clone(), crate::binary("worker"))
            .unwrap()
            .args([
                "--listen",
                &address,
                "--etcd",
                &self.etcd.endpoint(),
                "--store",
                &self.store_url,
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--memory-budget",
                self.memory_budget,
                "--idle-ttl",
                self.idle_ttl,
                "--id",
                &id,
                "--internal-token",
                TOKEN,
                "--lease-ttl",
                self.lease_ttl,
            ])
            .args(self.worker_args.clone());
        for (k, v) in &self.store_env {
            process = process.env(k, v);
        }
        process.spawn().await.unwrap();
        process
            .wait_http_ready(
                &format!("http://{address}/v2/health/ready"),
                Duration::from_secs(30),
                |s, _| s.is_success(),
            )
            .await
            .unwrap();
        self.workers.push(WorkerProc {
            id,
            address,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            process,
        });
        n
    }

    pub async fn add_router(&mut self) -> usize {
        let n = self.routers.len();
        let id = format!("r-{n}");
        let (port, metrics_port) = (free_port(), free_port());
        let mut process = ManagedProcess::new(id.clone(), crate::binary("router"))
            .unwrap()
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--etcd",
                &self.etcd.endpoint(),
                "--internal-token",
                TOKEN,
                "--id",
                &id,
                "--controller-lease-ttl",
                "3s",
            ])
            .args(self.router_args.clone());
        process.spawn().await.unwrap();
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ready(
                &format!("{url}/v2/health/ready"),
                Duration::from_secs(30),
                |s, _| s.is_success(),
            )
            .await
            .unwrap();
        self.routers.push(RouterProc {
            id,
            url,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            process,
        });
        n
    }

    /// Creates a tenant and returns its API key.
    pub async fn tenant(&self, name: &str, shard_size: Option<u32>) -> String {
        self.tenant_with(name, shard_size, TenantLimits::default())
            .await
    }

    pub async fn tenant_with(
        &self,
        name: &str,
        shard_size: Option<u32>,
        limits: TenantLimits,
    ) -> String {
        let key = self
            .cp
            .create_tenant(&name.parse().unwrap(), shard_size, limits)
            .await
            .unwrap();
        key.expose().to_owned()
    }

    /// Publishes a small MLP `64 → 16 → 1` (seeded), makes it live, and waits until every
    /// running router's snapshot has it (and so the tenant and its keys made before).
    pub async fn publish(&self, tenant: &str, model: &str, version: &str, seed: u64) -> Manifest {
        let m = MlpArtifact::random(&[DIM, 16, 1], seed);
        let manifest = publish(&self.store, &self.cp, tenant, model, version, &m)
            .await
            .unwrap();
        let live = self
            .cp
            .read::<Value>(&Key::LiveVersion(manifest.key()))
            .await
            .unwrap()
            .expect("the live pointer was just written");
        self.wait_routers_at(live.mod_revision).await;
        manifest
    }

    /// Waits until every router that answers `/metrics` has a snapshot at `revision` or
    /// later (a stopped router is skipped).
    pub async fn wait_routers_at(&self, revision: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for r in &self.routers {
            loop {
                let Ok(resp) = self.http.get(&r.metrics_url).send().await else {
                    break;
                };
                let text = resp.text().await.unwrap_or_default();
                if metric_sum(&text, CONTROL_SNAPSHOT_REVISION) >= revision as f64 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "router {} did not reach revision {revision} within 30 s",
                    r.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Creates `tenant` with shard size `k`, publishes its model `model` (version 1,
    /// weights from `seed`) and waits until the controller has placed it on `k` workers.
    /// Returns the tenant's API key.
    pub async fn placed_model(&self, tenant: &str, model: &str, k: u32, seed: u64) -> String {
        let key = self.tenant(tenant, Some(k)).await;
        self.publish(tenant, model, "1", seed).await;
        let shard_key = ModelKey::parse_shard_key(&format!("{tenant}/{model}")).unwrap();
        self.wait_assignment(&shard_key, Duration::from_secs(10), |a| {
            a.workers.len() == k as usize
        })
        .await;
        key
    }

    /// Waits until the stored assignment of `key` satisfies `ok`.
    pub async fn wait_assignment(
        &self,
        key: &ModelKey,
        within: Duration,
        ok: impl Fn(&Assignment) -> bool,
    ) -> Assignment {
        let deadline = Instant::now() + within;
        loop {
            let a = self
                .cp
                .read::<Assignment>(&Key::Assignment(key.clone()))
                .await
                .ok()
                .flatten();
            if let Some(a) = a.filter(|a| ok(&a.value)) {
                return a.value;
            }
            assert!(
                Instant::now() < deadline,
                "assignment of {key} not as expected within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Scores `rows` of `model` through router `r` with `key`.
    pub async fn infer(&self, r: usize, key: &str, model: &str, rows: &[Vec<f32>]) -> Reply {
        let url = format!("{}/v2/models/{model}/infer", self.routers[r].url);
        let resp = self
            .http
            .post(url)
            .bearer_auth(key)
            .json(&infer_body(rows))
            .send()
            .await
            .unwrap();
        Reply::read(resp).await
    }

    /// Scores `rows` on worker `w` directly (internal API).
    pub async fn infer_direct(
        &self,
        w: usize,
        tenant: &str,
        model: &str,
        rows: &[Vec<f32>],
    ) -> Reply {
        let url = format!(
            "http://{}/v2/models/{tenant}.{model}/infer",
            self.workers[w].address
        );
        let resp = self
            .http
            .post(url)
            .header("x-shardline-token", TOKEN)
            .json(&infer_body(rows))
            .send()
            .await
            .unwrap();
        Reply::read(resp).await
    }

    /// Sum of a counter (all label sets) on router `r`'s `/metrics`.
    pub async fn router_metric(&self, r: usize, name: &str) -> f64 {
        let text = self
            .http
            .get(&self.routers[r].metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, name)
    }
}

/// Sum of every sample of `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    crate::metric_sum(text, name, None)
}

/// An OIP infer body for `rows`.
pub fn infer_body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({
        "id": "req-1",
        "inputs": [{"name": "features", "shape": [rows.len(), DIM], "datatype": "FP32", "data": data}]
    })
}

/// Deterministic feature rows.
pub fn rows(n: usize, seed: u32) -> Vec<Vec<f32>> {
    (0..n)
        .map(|r| {
            (0..DIM)
                .map(|c| (((r * 31 + c * 7) as u32 + seed * 13) % 97) as f32 / 97.0 - 0.5)
                .collect()
        })
        .collect()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub worker: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let worker = header("x-shardline-worker");
        let retry_after = header("retry-after");
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            worker,
            retry_after,
            body,
        }
    }

    /// The first output's data.
    pub fn scores(&self) -> Vec<f64> {
        self.body["outputs"][0]["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no outputs in {}", self.body))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }
}

/// What a steady load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    /// One line per failed request: when (since the start), what.
    pub failures: Vec<String>,
}

/// Open-loop load: `rate` requests per second for `duration`, round-robin over
/// `(api key, model)` pairs, each request on its own task (a slow answer does not slow
/// the arrivals). Returns when every request has been answered.
pub async fn steady_load(
    http: reqwest::Client,
    url: String,
    targets: Vec<(String, String)>,
    rate: u32,
    duration: Duration,
) -> LoadReport {
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs(1) / rate;
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let body = serde_json::to_vec(&infer_body(&rows(1, 7))).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let (key, model) = targets[i % targets.len()].clone();
        let req = http
            .post(format!("{url}/v2/models/{model}/infer"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.clone());
        tasks.spawn(async move {
            let at = started.elapsed();
            match req.send().await {
                Ok(resp) if resp.status() == 200 => Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    Err(format!("{at:?} {model}: {status} {text}"))
                }
                Err(e) => Err(format!("{at:?} {model}: {e}")),
            }
        });
    }
    let mut report = LoadReport {
        sent: total,
        ..LoadReport::default()
    };
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => report.ok += 1,
            Err(e) => report.failures.push(e),
        }
    }
    report
}
