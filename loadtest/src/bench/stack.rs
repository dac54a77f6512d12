//! The Shardline side of the HTTP benchmarks (`bench-router`, `bench-mlserver`): etcd, a
//! `file://` model store and tenant `bench` with its API key ([`Control`]), then ONE
//! release `worker` and ONE release `router` process found next to this executable
//! ([`start_worker`], [`start_router`]); the requests they all send (one OIP v2 JSON
//! body, polled until it scores); and reading one series from a `/metrics` page
//! ([`metric`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use shardline_artifacts::ArtifactStore;
use shardline_control::{ControlPlane, EtcdStore};
use shardline_shared::keys::Prefix;
use shardline_shared::records::TenantLimits;
use tempfile::TempDir;

use super::load::{self, RequestSpec};
use crate::models::MlpArtifact;
use crate::models::publish::publish;
use shardline_testkit::EtcdProcess;
use shardline_testkit::fleet::{Node, Spec};

/// The internal token the router (and nginx) send to the worker.
pub use shardline_testkit::TOKEN;
/// The tenant every benchmark model belongs to.
pub const TENANT: &str = "bench";

/// etcd, the control plane on it, a `file://` store in a scratch directory, and tenant
/// [`TENANT`] (shard size 1, no limits). Dropping it stops etcd and deletes the store.
#[derive(Debug)]
pub struct Control {
    pub etcd: EtcdProcess,
    pub cp: ControlPlane,
    pub store: ArtifactStore,
    pub store_url: String,
    /// The tenant's API key (`Authorization: Bearer …` at the router).
    pub key: String,
    /// Kept so that the store lives as long as the benchmark.
    _store_dir: TempDir,
}

impl Control {
    pub async fn start() -> anyhow::Result<Self> {
        let etcd = EtcdProcess::start().await?;
        let cp = ControlPlane::new(
            Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?),
            Prefix::default(),
        );
        let store_dir = tempfile::Builder::new()
            .prefix("shardline-bench-store-")
            .tempdir()?;
        let store_url = format!("file://{}", store_dir.path().display());
        let store = ArtifactStore::from_url(&store_url)?;
        let key = cp
            .create_tenant(
                &TENANT.parse()?,
                Some(1),
                TenantLimits {
                    max_in_flight: 0,
                    rate_per_sec: 0,
                },
            )
            .await?;
        Ok(Self {
            etcd,
            cp,
            store,
            store_url,
            key: key.expose().to_owned(),
            _store_dir: store_dir,
        })
    }

    /// Publishes `m` as version 1 of `model` of tenant [`TENANT`].
    pub async fn publish(&self, model: &str, m: &MlpArtifact) -> anyhow::Result<()> {
        publish(&self.store, &self.cp, TENANT, model, "1", m).await?;
        Ok(())
    }
}

/// Starts the release `worker` binary `bin` (1 GiB budget) and waits until it is ready.
pub async fn start_worker(bin: &Path, etcd: &str, store_url: &str) -> anyhow::Result<Node> {
    Spec::worker("w-0", etcd, store_url)
        .set("--memory-budget", "1GiB")
        .spawn(Some(bin.to_owned()))
        .await
}

/// Starts the release `router` binary `bin` (`--threads threads` when given) and waits
/// until it is ready.
pub async fn start_router(bin: &Path, etcd: &str, threads: Option<usize>) -> anyhow::Result<Node> {
    let mut spec = Spec::router("r-0", etcd);
    if let Some(t) = threads {
        spec = spec.set("--threads", t.to_string());
    }
    spec.spawn(Some(bin.to_owned())).await
}

/// The router as [`start_router`] starts it, also serving gRPC (`--grpc-listen`) on the
/// address returned beside it.
pub async fn start_router_grpc(
    bin: &Path,
    etcd: &str,
    threads: Option<usize>,
) -> anyhow::Result<(Node, SocketAddr)> {
    let grpc = SocketAddr::from(([127, 0, 0, 1], shardline_testkit::free_port()));
    let mut spec = Spec::router("r-0", etcd).set("--grpc-listen", grpc.to_string());
    if let Some(t) = threads {
        spec = spec.set("--threads", t.to_string());
    }
    Ok((spec.spawn(Some(bin.to_owned())).await?, grpc))
}

/// The router's request for tenant [`TENANT`]'s `model`: `POST /v2/models/<model>/infer`
/// with the tenant's key.
pub fn router_spec(
    addr: SocketAddr,
    model: &str,
    key: &str,
    body: bytes::Bytes,
) -> anyhow::Result<RequestSpec> {
    RequestSpec::post_json(
        addr,
        &format!("/v2/models/{model}/infer"),
        &[("authorization", &format!("Bearer {key}"))],
        body,
    )
}

/// A release binary built next to this executable (or in `$SHARDLINE_BIN_DIR`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    shardline_testkit::find_binary(name).map_err(|e| {
        e.context(
            "build the release binaries first \
             (cargo build --release -p shardline-router -p shardline-worker -p shardline-shardctl)",
        )
    })
}

/// One unlabelled series from the `/metrics` page at `metrics_url`; an error when the
/// page does not have it (a renamed metric must not read as zero).
pub async fn metric(http: &reqwest::Client, metrics_url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(metrics_url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    ensure!(text.contains(name), "no {name} at {metrics_url}");
    Ok(shardline_testkit::metric_sum(&text, name, None))
}

/// The OIP JSON body for `rows` row-major rows of `row.len() / rows` values, input
/// `features`.
pub fn infer_body(data: &[f32], rows: usize) -> anyhow::Result<Vec<u8>> {
    ensure!(
        rows > 0 && data.len().is_multiple_of(rows),
        "{} values are not {rows} rows",
        data.len()
    );
    Ok(serde_json::to_vec(&serde_json::json!({"inputs": [{
        "name": "features", "shape": [rows, data.len() / rows], "datatype": "FP32", "data": data,
    }]}))?)
}

/// Polls one request until it answers 200 (the router may not have seen the model yet),
/// then returns its `outputs[0].data` (read from the binary tail when the answer is
/// binary tensor data).
pub async fn wait_scores(
    spec: &RequestSpec,
    within: Duration,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let last = match load::once(spec).await {
            Ok((status, body)) if status == 200 && spec.grpc => {
                return crate::grpc::scores(&body)
                    .map(|s| serde_json::json!(s))
                    .map_err(|e| anyhow::anyhow!(e));
            }
            Ok((status, body)) if status == 200 => return answer_scores(&body),
            Ok((status, body)) => format!("{status}: {}", String::from_utf8_lossy(&body)),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("no 200 within {within:?}; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scores of an infer answer as `f32`s: its JSON `outputs[0].data`, or, when the
/// JSON header gives `binary_data_size`, the little-endian `f32`s after it.
pub fn answer_scores(body: &[u8]) -> anyhow::Result<serde_json::Value> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    let v = stream.next().context("an empty answer")??;
    let header_length = stream.byte_offset();
    if v["outputs"][0]["parameters"]["binary_data_size"].is_u64() {
        let scores: Vec<f32> = body[header_length..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return Ok(serde_json::json!(scores));
    }
    // As f32s, so that JSON and binary answers of the same scores compare equal.
    let data = v["outputs"][0]["data"].as_array();
    let scores: Option<Vec<f32>> =
        data.and_then(|d| d.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
    let scores = scores.with_context(|| format!("no numbers in outputs[0].data of {v}"))?;
    Ok(serde_json::json!(scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_the_input_and_shape_the_rows() {
        let body = infer_body(&[0.5, -1.0, 0.25, 2.0], 2).expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let input = &v["inputs"][0];
        assert_eq!(input["name"], "features");
        assert_eq!(input["shape"], serde_json::json!([2, 2]));
        assert_eq!(input["datatype"], "FP32");
        assert_eq!(input["data"], serde_json::json!([0.5, -1.0, 0.25, 2.0]));
        assert!(infer_body(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(infer_body(&[], 0).is_err());
    }

    #[test]
    fn scores_are_read_from_json_and_binary_answers() {
        use shardline_shared::decode::{encode_infer_response, encode_infer_response_binary};
        let scores = [0.25f32, -0.1, 3e-7];
        let json = encode_infer_response("m", "1", None, "y", 3, 1, &scores);
        let (binary, _) = encode_infer_response_binary("m", "1", None, "y", 3, 1, &scores);
        let want = serde_json::json!(scores);
        assert_eq!(answer_scores(&json).expect("json"), want);
        assert_eq!(answer_scores(&binary).expect("binary"), want);
        assert!(answer_scores(b"").is_err());
    }
}
