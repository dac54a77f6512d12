//! A worker with real neighbours: etcd (`EtcdProcess`), moto's S3 (`S3Process`) and the
//! worker's own `serve()` on loopback, plus models built, published and scored by hand.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use safetensors::{Dtype, tensor::TensorView};
use sha2::{Digest, Sha256};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_loadtest::harness::{EtcdProcess, S3Process};
use shardline_shared::keys::Prefix;
use shardline_shared::manifest::{
    Activation, Architecture, CONFIG_FILE, FORMAT_V1, FileDigest, LayerSpec, Manifest, ModelConfig,
    TensorSpec, WEIGHTS_FILE,
};
use shardline_worker::artifacts::{ArtifactStore, StoreOptions};
use shardline_worker::config::WorkerArgs;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-internal-token-0123";

/// A model built in the test, with its weights kept for the reference computation.
pub struct TestModel {
    pub config: ModelConfig,
    pub config_json: Vec<u8>,
    pub weights: Vec<u8>,
    /// Per layer: `[out, in]` weights, bias, fan-in, fan-out.
    layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
}

impl TestModel {
    /// An MLP with the given widths: relu between layers, sigmoid at the end.
    pub fn mlp(dims: &[usize], seed: u64) -> Self {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let mut layers = Vec::new();
        let mut specs = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let scale = 2.0 / (fan_in as f32).sqrt();
            let weights: Vec<f32> = (0..fan_in * fan_out).map(|_| next() * scale).collect();
            let bias: Vec<f32> = (0..fan_out).map(|_| next() * 0.1).collect();
            layers.push((weights, bias, fan_in, fan_out));
            let last = i + 2 == dims.len();
            specs.push(LayerSpec {
                weight: format!("layers.{i}.weight"),
                bias: Some(format!("layers.{i}.bias")),
                activation: if last {
                    Activation::Sigmoid
                } else {
                    Activation::Relu
                },
            });
        }
        let config = ModelConfig {
            format: FORMAT_V1.into(),
            architecture: Architecture::Mlp,
            input: TensorSpec {
                name: "features".into(),
                dim: dims[0],
            },
            layers: specs,
            output: TensorSpec {
                name: "risk".into(),
                dim: *dims.last().unwrap(),
            },
        };
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b, fan_in, fan_out))| {
                [
                    (format!("layers.{i}.weight"), vec![*fan_out, *fan_in], le(w)),
                    (format!("layers.{i}.bias"), vec![*fan_out], le(b)),
                ]
            })
            .collect();
        let views = raw.iter().map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        });
        let weights = safetensors::serialize(views, None).unwrap();
        let config_json = serde_json::to_vec_pretty(&config).unwrap();
        Self {
            config,
            config_json,
            weights,
            layers,
        }
    }

    /// The scores computed in plain f64 Rust.
    pub fn reference(&self, input: &[f32], rows: usize) -> Vec<f64> {
        let mut x: Vec<f64> = input.iter().map(|v| f64::from(*v)).collect();
        let n = self.layers.len();
        for (li, (w, b, fan_in, fan_out)) in self.layers.iter().enumerate() {
            let mut y = vec![0.0; rows * fan_out];
            for r in 0..rows {
                for o in 0..*fan_out {
                    let mut acc = f64::from(b[o]);
                    for i in 0..*fan_in {
                        acc += x[r * fan_in + i] * f64::from(w[o * fan_in + i]);
                    }
                    y[r * fan_out + o] = if li + 1 == n {
                        1.0 / (1.0 + (-acc).exp())
                    } else {
                        acc.max(0.0)
                    };
                }
            }
            x = y;
        }
        x
    }

    pub fn resident_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|(w, b, ..)| ((w.len() + b.len()) * 4) as u64)
            .sum()
    }
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

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
        m: &TestModel,
    ) -> Manifest {
        let location = format!("{tenant}/{model}/{version}");
        self.store
            .put(
                &format!("{location}/{CONFIG_FILE}"),
                Bytes::from(m.config_json.clone()),
            )
            .await
            .unwrap();
        self.store
            .put(
                &format!("{location}/{WEIGHTS_FILE}"),
                Bytes::from(m.weights.clone()),
            )
            .await
            .unwrap();
        let dims: Vec<usize> = std::iter::once(m.config.input.dim)
            .chain(m.layers.iter().map(|l| l.3))
            .collect();
        let manifest = Manifest {
            tenant: tenant.parse().unwrap(),
            model: model.parse().unwrap(),
            version: version.parse().unwrap(),
            location,
            config_file: digest(&m.config_json),
            weights_file: digest(&m.weights),
            config: m.config.clone(),
            dims,
            published_at: 1,
        };
        self.cp.register_version(&manifest).await.unwrap();
        self.cp
            .set_live(&manifest.key(), &manifest.version)
            .await
            .unwrap();
        manifest
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
    shardline_loadtest::harness::post_head_only(
        &addr.to_string(),
        path,
        &[("x-shardline-token", TOKEN)],
        declared,
    )
    .await
    .unwrap()
}
