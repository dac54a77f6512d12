//! The peer: MLServer from `./.venv-peer` (`scripts/ensure-venv.sh peer`) serving a
//! scikit-learn model, and the script that trains that model. [`settings`] and
//! [`model_settings`] generate MLServer's two configuration files (pure); [`train`] runs
//! `loadtest/peer/train_sklearn.py` on rows this process wrote; [`MlServer`] starts
//! `mlserver start DIR` as a child process and, when stopping it, also ends whatever of
//! its process tree (inference workers, multiprocessing's resource tracker) outlived it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};

use super::sklearn::SklearnMlp;
use crate::procfs::descendants;
use shardline_testkit::{ManagedProcess, free_port, send_signal};

/// Environment variable naming the peer's venv (default: `.venv-peer` in the workspace).
pub const PEER_VENV_ENV: &str = "SHARDLINE_PEER_VENV";
/// The model's name at MLServer (and at Shardline).
pub const MODEL: &str = "mlp";
/// MLServer imports a lot of Python before it listens, and loads the model after.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the peer's Python lives.
#[derive(Debug, Clone)]
pub struct Peer {
    pub venv: PathBuf,
    /// `loadtest/peer/train_sklearn.py`.
    pub script: PathBuf,
}

impl Peer {
    /// `$SHARDLINE_PEER_VENV`, else the workspace's `.venv-peer`; it must hold `mlserver`.
    pub fn find() -> anyhow::Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = std::env::var_os(PEER_VENV_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../.venv-peer"));
        let peer = Self {
            // Canonical, so that its processes' command lines can be recognised by it.
            venv: std::fs::canonicalize(&venv).unwrap_or(venv),
            script: manifest.join("peer/train_sklearn.py"),
        };
        ensure!(
            peer.bin("mlserver").is_file(),
            "{} has no bin/mlserver: run `scripts/ensure-venv.sh peer` (or set {PEER_VENV_ENV})",
            peer.venv.display()
        );
        ensure!(
            peer.script.is_file(),
            "{} is missing",
            peer.script.display()
        );
        Ok(peer)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }
}

/// Runs the training script on `rows` (row-major, `dim` each) and `labels`, in `dir`:
/// writes `features.f32` and `labels.f32` there, and the script writes `model.joblib` and
/// `weights.json`, which this returns parsed.
pub async fn train(
    peer: &Peer,
    dir: &Path,
    rows: &[f32],
    labels: &[f32],
    dim: usize,
    max_iter: usize,
    seed: u64,
) -> anyhow::Result<SklearnMlp> {
    let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (features, label_file) = (dir.join("features.f32"), dir.join("labels.f32"));
    std::fs::write(&features, le(rows))?;
    std::fs::write(&label_file, le(labels))?;
    let out = tokio::process::Command::new(peer.bin("python"))
        .arg(&peer.script)
        .arg("--features")
        .arg(&features)
        .arg("--labels")
        .arg(&label_file)
        .args(["--dim", &dim.to_string()])
        .arg("--out")
        .arg(dir)
        .args(["--max-iter", &max_iter.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .await
        .with_context(|| format!("run {}", peer.script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed ({}):\n{}",
        peer.script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read(dir.join("weights.json")).context("read weights.json")?;
    Ok(SklearnMlp::from_json(&json)?)
}

/// MLServer's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub metrics: u16,
}

/// MLServer's `settings.json`: loopback only, the given ports (gRPC cannot be turned off;
/// it listens unused), `parallel_workers` inference processes, and `debug: false`, which
/// turns off uvicorn's per-request access log (MLServer's default is `debug: true`;
/// Shardline logs no line per request either). Metrics stay on, as Shardline's do.
pub fn settings(ports: Ports, parallel_workers: usize) -> serde_json::Value {
    serde_json::json!({
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        "parallel_workers": parallel_workers,
        "debug": false,
    })
}

/// The model's `model-settings.json`: scikit-learn's runtime on `joblib`, answering
/// `predict` (the runtime's default output).
pub fn model_settings(joblib: &Path) -> serde_json::Value {
    serde_json::json!({
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": joblib.display().to_string()},
    })
}

/// A running MLServer.
#[derive(Debug)]
pub struct MlServer {
    process: ManagedProcess,
    pub addr: SocketAddr,
    /// Its gRPC listener (`grpc_port`).
    pub grpc: SocketAddr,
}

impl MlServer {
    /// Writes the configuration into a scratch directory (`repo/settings.json`,
    /// `repo/mlp/model-settings.json`), runs `mlserver start repo` there, and waits until
    /// the model is ready.
    pub async fn start(
        peer: &Peer,
        joblib: &Path,
        parallel_workers: usize,
    ) -> anyhow::Result<Self> {
        let ports = Ports {
            http: free_port(),
            grpc: free_port(),
            metrics: free_port(),
        };
        let process = ManagedProcess::new("mlserver", peer.bin("mlserver"))?;
        let repo = process.dir().join("repo");
        std::fs::create_dir_all(repo.join(MODEL))?;
        let write = |path: PathBuf, v: serde_json::Value| -> anyhow::Result<()> {
            Ok(std::fs::write(path, serde_json::to_vec_pretty(&v)?)?)
        };
        write(
            repo.join("settings.json"),
            settings(ports, parallel_workers),
        )?;
        write(
            repo.join(MODEL).join("model-settings.json"),
            model_settings(joblib),
        )?;
        let mut process = process.arg("start").arg(&repo);
        process.spawn().await?;
        let addr: SocketAddr = format!("127.0.0.1:{}", ports.http).parse()?;
        let ready = process
            .wait_http_ready(
                &format!("http://{addr}/v2/models/{MODEL}/ready"),
                READY_TIMEOUT,
                |s, _| s.is_success(),
            )
            .await;
        let grpc: SocketAddr = format!("127.0.0.1:{}", ports.grpc).parse()?;
        let server = Self {
            process,
            addr,
            grpc,
        };
        if let Err(e) = ready {
            server.stop(&peer.venv).await;
            return Err(e);
        }
        Ok(server)
    }

    /// The main process.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.process.pid().context("mlserver is not running")
    }

    /// SIGTERM (MLServer then stops its inference pool), then SIGKILL for any process of
    /// its tree still there, by PID, once it has checked that the PID still runs this
    /// venv's Python.
    pub async fn stop(mut self, venv: &Path) {
        let tree = self.process.pid().map(descendants).unwrap_or_default();
        let _ = self.process.stop().await;
        for pid in tree {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*venv.to_string_lossy()))
                .unwrap_or(false);
            if ours {
                let _ = send_signal(pid, "KILL");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_listen_on_loopback_with_the_given_ports_and_no_access_log() {
        let s = settings(
            Ports {
                http: 8001,
                grpc: 8002,
                metrics: 8003,
            },
            1,
        );
        assert_eq!(s["host"], "127.0.0.1");
        assert_eq!(
            (&s["http_port"], &s["grpc_port"], &s["metrics_port"]),
            (&8001.into(), &8002.into(), &8003.into())
        );
        assert_eq!(s["parallel_workers"], 1);
        assert_eq!(s["debug"], false);
    }

    #[test]
    fn model_settings_name_the_sklearn_runtime_and_the_file() {
        let m = model_settings(Path::new("/tmp/x/model.joblib"));
        assert_eq!(m["name"], MODEL);
        assert_eq!(m["implementation"], "mlserver_sklearn.SKLearnModel");
        assert_eq!(m["parameters"]["uri"], "/tmp/x/model.joblib");
    }
}
