//! A worker with real neighbours: etcd (`EtcdProcess`), moto's S3 (`S3Process`) and the
//! worker's own `serve()` on loopback. Models are `shardline_testkit::models::MlpArtifact`s
//! (random weights, with an f64 reference forward pass), published as `shardctl` would.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shardline_artifacts::{ArtifactStore, StoreOptions};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_shared::keys::Prefix;
use shardline_shared::manifest::Manifest;
use shardline_testkit::models::MlpArtifact;
use shardline_testkit::{EtcdProcess, S3Process};
use shardline_worker::config::WorkerArgs;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-internal-token-0123";

/// Etcd, S3 and a control plane; workers are started on demand.
pub struct Fleet {
    pub etcd: EtcdProcess,
    pub s3: S3Process,
    pub cp: ControlPlane,
    pub store: ArtifactStore,
}

impl Fleet {
    pub async fn start() -> Self {
        let (etcd, s3) = tokio::try_join!(EtcdProcess::start(), S3Process::start()).unwrap();
        let etcd_store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
        let cp = ControlPlane::new(etcd_store, Prefix::default());
        let store =
            ArtifactStore::from_url_with(&s3.store_url(), Self::store_options(&s3)).unwrap();
        Self {
            etcd,
            s3,
            cp,
            store,
        }
    }

    /// Short timeouts, so an S3 outage shows within a second or two.
    pub fn store_options(s3: &S3Process) -> StoreOptions {
        StoreOptions {
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(1500),
            max_retries: 0,
            ..StoreOptions::default()
        }
        .with_env(s3.env())
    }

    /// Uploads a model and registers it as the live version.
    pub async fn publish(
        &self,
        tenant: &str,
        model: &str,
        version: &str,
        m: &MlpArtifact,
    ) -> Manifest {
        shardline_testkit::models::publish::publish(
            &self.store,
            &self.cp,
            tenant,
            model,
            version,
            m,
        )
        .await
        .unwrap()
    }

    /// Starts a worker (`serve()`) with this budget and idle TTL.
    pub async fn worker(&self, id: &str, budget: u64, idle_ttl: &str) -> Worker {
        self.worker_with(id, budget, idle_ttl, 256).await
    }

    /// As [`Fleet::worker`], with a per-model in-flight limit.
    pub async fn worker_with(
        &self,
        id: &str,
        budget: u64,
        idle_ttl: &str,
        max_in_flight: u32,
    ) -> Worker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let args = WorkerArgs::try_parse_from([
            "worker",
            "--listen",
            &addr.to_string(),
            "--etcd",
            &self.etcd.endpoint(),
            "--store",
            &self.s3.store_url(),
            "--memory-budget",
            &budget.to_string(),
            "--idle-ttl",
            idle_ttl,
            "--id",
            id,
            "--internal-token",
            TOKEN,
            "--max-in-flight-per-model",
            &max_in_flight.to_string(),
        ])
        .unwrap();
        let config = args.validate().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let store =
            ArtifactStore::from_url_with(&self.s3.store_url(), Self::store_options(&self.s3))
                .unwrap();
        let task = tokio::spawn(async move {
            shardline_worker::serve::serve(config, store, listener, Some(metrics), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let worker = Worker {
            addr,
            metrics_addr,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(tx),
            task,
        };
        worker.wait_ready().await;
        worker
    }
}

/// A running worker.
pub struct Worker {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Worker {
    async fn wait_ready(&self) {
        for _ in 0..200 {
            let r = self.http.get(self.url("/v2/health/ready")).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("worker never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs an infer request body for `tenant.model`.
    pub async fn infer(&self, name: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v2/models/{name}/infer")))
            .header("x-shardline-token", TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Scores `rows` rows and returns the values, asserting success.
    pub async fn score(&self, name: &str, input: &[f32], rows: usize) -> Vec<f32> {
        let dim = input.len() / rows;
        let body = serde_json::json!({"inputs": [{"name": "features", "shape": [rows, dim], "datatype": "FP32", "data": input}]});
        let resp = self.infer(name, body.to_string()).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    /// The value of one series in `/metrics` (`name{labels}` exactly as exposed), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    /// The resident models as `/v2/repository/index` lists them.
    pub async fn index(&self) -> Vec<serde_json::Value> {
        let resp = self
            .http
            .get(self.url("/v2/repository/index"))
            .header("x-shardline-token", TOKEN)
            .send()
            .await
            .unwrap();
        resp.json::<Vec<serde_json::Value>>().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

pub fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let err = (f64::from(*g) - w).abs();
        assert!(err <= 1e-5 * w.abs().max(1e-3) + 1e-6, "got {g}, want {w}");
    }
}

/// Sends only the head of an oversized POST (see `harness::post_head_only`).
pub async fn post_head_only(addr: SocketAddr, path: &str, declared: usize) -> (u16, String) {
    shardline_testkit::post_head_only(
        &addr.to_string(),
        path,
        &[("x-shardline-token", TOKEN)],
        declared,
    )
    .await
    .unwrap()
}
