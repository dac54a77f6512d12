//! The fleet's processes: starting one detached in its own process group with its output
//! in a log, recording its PID and kernel start time ([`ProcessRecord`]), recognising it
//! later by both ([`is_ours`], from `/proc/<pid>/stat` through [`crate::procfs`]),
//! waiting for it to be ready, and stopping it.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{READY_TIMEOUT, STOP_GRACE};
use crate::procfs;
use shardline_testkit::fleet::Spec;
use shardline_testkit::{free_port, http_client, on_path, send_signal};

/// One process `up` started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with the PID, identifies the process for good.
    pub start_time: u64,
    pub log: PathBuf,
    /// `http://…` of its API (etcd client URL, S3 endpoint, worker or router listen).
    pub url: String,
    /// `http://…/metrics`, for workers and routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// Starts `spec`'s binary from `bin_dir` as a detached process on free loopback ports
/// (the test kit's one flag list for a worker or router) and records it in `started`.
pub(super) fn spawn_node(
    bin_dir: &Path,
    spec: &Spec,
    logs: &Path,
    started: &mut Vec<ProcessRecord>,
) -> anyhow::Result<ProcessRecord> {
    let (port, metrics_port) = (free_port(), free_port());
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let argv = spec.command_line(loopback(port), loopback(metrics_port));
    let mut cmd = Command::new(bin_dir.join(spec.role.binary_name()));
    cmd.args(&argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let url = format!("http://127.0.0.1:{port}");
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let p = spawn(&spec.id, cmd, logs, url, Some(metrics))?;
    started.push(p.clone());
    Ok(p)
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`](super::STOP_GRACE); `false` when the process was not ours
/// (already gone, or the PID now belongs to someone else).
pub(super) fn stop(p: &ProcessRecord) -> anyhow::Result<bool> {
    if !is_ours(p) {
        return Ok(false);
    }
    send_signal(p.pid, "TERM")?;
    let deadline = Instant::now() + STOP_GRACE;
    while is_ours(p) {
        if Instant::now() >= deadline {
            send_signal(p.pid, "KILL")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Whether `p` still runs (and is not a zombie) with the recorded start time.
pub fn is_ours(p: &ProcessRecord) -> bool {
    procfs::read_stat(p.pid).is_some_and(|s| s.state != 'Z' && s.start_time == Some(p.start_time))
}

pub(super) fn spawn(
    name: &str,
    mut cmd: Command,
    logs: &Path,
    url: String,
    metrics_url: Option<String>,
) -> anyhow::Result<ProcessRecord> {
    let log = logs.join(format!("{name}.log"));
    let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    // The child is not waited for: it outlives this process when the fleet is detached.
    drop(child);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("{name} exited at once; see {}", log.display()))?;
    let start_time = procfs::parse_stat(&stat)
        .and_then(|s| s.start_time)
        .with_context(|| format!("unreadable /proc/{pid}/stat"))?;
    Ok(ProcessRecord {
        name: name.to_owned(),
        pid,
        start_time,
        log,
        url,
        metrics_url,
    })
}

pub(super) async fn wait_ready(p: &ProcessRecord, url: &str) -> anyhow::Result<()> {
    let client = http_client(Duration::from_secs(2))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !is_ours(p) {
            bail!(
                "{} exited; last log lines:\n{}",
                p.name,
                log_tail(&p.log, 20)
            );
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not ready at {url} after {READY_TIMEOUT:?}; last log lines:\n{}",
                p.name,
                log_tail(&p.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where `just` builds release binaries: next to the running `loadtest`, else
/// `target/release` of the workspace, else `PATH`'s directory of `router`.
pub fn default_bin_dir() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(dir) = beside.filter(|d| d.join("router").is_file()) {
        return dir;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    if workspace.join("router").is_file() {
        return workspace;
    }
    on_path("router")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or(workspace)
}
