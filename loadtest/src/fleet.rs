//! A local Shardline fleet for demos and sizing: etcd, a model store (`file://` directory,
//! or moto's S3 with `s3`), N workers and M routers started as detached processes under
//! one run directory, recorded in `fleet.json` with each process's PID *and* kernel start
//! time, so that [`down`] stops exactly what [`up`] started and never a stranger that
//! reused a PID.
//!
//! Layout of the run directory: `fleet.json` (the record), `keys.json` (tenants' API keys,
//! written by whoever creates tenants: see [`create_tenant`]), `logs/<name>.log` (stdout
//! and stderr of each process), `etcd/` (etcd's data), `store/` (the `file://` model
//! store), `models/` (artifacts before publishing).
//!
//! Each `up` starts a fresh fleet: it clears `etcd/`, `store/`, `logs/` and the two JSON
//! files an earlier, stopped fleet left (`models/` is the caller's).
//!
//! Processes run in their own process group: a Ctrl-C in the terminal reaches only
//! `loadtest`, which then shuts the fleet down itself (foreground `fleet up`) or leaves it
//! running (`--detach`, as `just demo` does) until `fleet down`.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::loadgen::keys::TenantKey;
use shardline_testkit::{
    find_etcd, find_moto_server, free_port, http_client, on_path, send_signal,
};

/// File in the run directory recording what `up` started.
pub const STATE_FILE: &str = "fleet.json";
/// File in the run directory with tenants' keys, the format `loadtest run --keys` reads
/// ([`crate::loadgen::keys`]).
pub const KEYS_FILE: &str = "keys.json";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub run_dir: PathBuf,
    pub workers: usize,
    pub routers: usize,
    /// Each worker's `--memory-budget` in bytes.
    pub memory_budget: u64,
    /// Workers' `--idle-ttl` (humantime, e.g. `10m`).
    pub idle_ttl: String,
    /// moto's S3 server instead of a `file://` directory.
    pub s3: bool,
    /// Directory holding the `router`, `worker` and `shardctl` binaries.
    pub bin_dir: PathBuf,
    /// Extra flags for every router (e.g. `--per-model-metrics`).
    pub router_args: Vec<String>,
    /// Extra flags for every worker.
    pub worker_args: Vec<String>,
}

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

/// The record of a running fleet (`fleet.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetState {
    pub run_dir: PathBuf,
    pub etcd: ProcessRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<ProcessRecord>,
    pub workers: Vec<ProcessRecord>,
    pub routers: Vec<ProcessRecord>,
    /// `file:///…` or `s3://bucket`.
    pub store_url: String,
    /// Environment the store needs (`AWS_*` for S3), also for `shardctl publish`.
    pub store_env: Vec<(String, String)>,
    /// The token routers present to workers.
    pub internal_token: String,
    pub memory_budget: u64,
    pub bin_dir: PathBuf,
}

impl FleetState {
    /// Every process, in the order `down` stops them (routers first, etcd last).
    pub fn processes(&self) -> Vec<&ProcessRecord> {
        let mut all: Vec<&ProcessRecord> = self.routers.iter().collect();
        all.extend(&self.workers);
        all.extend(&self.s3);
        all.push(&self.etcd);
        all
    }

    /// Reads `run_dir/fleet.json`.
    pub fn load(run_dir: &Path) -> anyhow::Result<Self> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no fleet recorded at {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.run_dir.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }

    /// A `shardctl` command aimed at this fleet's etcd (and store environment).
    pub fn shardctl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("shardctl"));
        cmd.arg("--etcd").arg(&self.etcd.url);
        cmd.envs(self.store_env.iter().map(|(k, v)| (k, v)));
        cmd.env("SHARDLINE_INTERNAL_TOKEN", &self.internal_token);
        cmd
    }
}

/// Starts a fleet and records it; on any failure stops what it had started.
pub async fn up(
    options: &FleetOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FleetState> {
    let run_dir = &options.run_dir;
    if let Ok(old) = FleetState::load(run_dir)
        && old.processes().iter().any(|p| is_ours(p))
    {
        bail!(
            "a fleet is already running from {} (stop it with `loadtest fleet down --run-dir {}`)",
            run_dir.display(),
            run_dir.display()
        );
    }
    // A fresh fleet every time: what an earlier, stopped fleet left (etcd's data, the
    // store, logs, keys) would otherwise come back (tenants that "already exist").
    for sub in ["logs", "etcd", "store"] {
        let dir = run_dir.join(sub);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
        }
    }
    for file in [STATE_FILE, KEYS_FILE] {
        let _ = std::fs::remove_file(run_dir.join(file));
    }
    for sub in ["logs", "etcd", "store", "models"] {
        std::fs::create_dir_all(run_dir.join(sub))
            .with_context(|| format!("create {}", run_dir.join(sub).display()))?;
    }
    let run_dir = std::fs::canonicalize(run_dir)?;
    let mut started = Vec::new();
    let result = start_all(options, &run_dir, &mut started, &mut progress).await;
    if result.is_err() {
        for p in started.iter().rev() {
            let _ = stop(p);
        }
    }
    let state = result?;
    state.save()?;
    Ok(state)
}

async fn start_all(
    options: &FleetOptions,
    run_dir: &Path,
    started: &mut Vec<ProcessRecord>,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<FleetState> {
    let logs = run_dir.join("logs");
    for bin in ["router", "worker", "shardctl"] {
        let path = options.bin_dir.join(bin);
        if !path.is_file() {
            bail!(
                "{} is missing: build it first (`cargo build --release -p shardline-router -p shardline-worker -p shardline-shardctl`)",
                path.display()
            );
        }
    }

    progress("starting etcd");
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut etcd = Command::new(find_etcd()?);
    etcd.arg("--name=shardline-local")
        .arg(format!("--data-dir={}", run_dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=shardline-local={peer_url}"))
        .arg("--initial-cluster-state=new")
        .arg("--heartbeat-interval=50")
        .arg("--election-timeout=500");
    let etcd = spawn("etcd", etcd, &logs, client_url.clone(), None)?;
    started.push(etcd.clone());
    wait_ready(&etcd, &format!("{client_url}/health")).await?;

    let (s3, store_url, store_env) = if options.s3 {
        progress("starting the S3-compatible store (moto)");
        let port = free_port();
        let mut moto = Command::new(find_moto_server()?);
        moto.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1");
        let endpoint = format!("http://127.0.0.1:{port}");
        let s3 = spawn("s3", moto, &logs, endpoint.clone(), None)?;
        started.push(s3.clone());
        wait_ready(&s3, &format!("{endpoint}/")).await?;
        let bucket = "shardline-models";
        let response = http_client(Duration::from_secs(10))?
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .context("create the bucket")?;
        if !response.status().is_success() {
            bail!("create the bucket: {}", response.status());
        }
        let env = [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        (Some(s3), format!("s3://{bucket}"), env)
    } else {
        let url = format!("file://{}", run_dir.join("store").display());
        (None, url, Vec::new())
    };

    let internal_token = format!("local-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let mut workers = Vec::new();
    for i in 0..options.workers {
        progress(&format!("starting worker w-{i}"));
        let (port, metrics) = (free_port(), free_port());
        let mut cmd = Command::new(options.bin_dir.join("worker"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--etcd", &client_url, "--store", &store_url])
            .args(["--memory-budget", &options.memory_budget.to_string()])
            .args(["--idle-ttl", &options.idle_ttl])
            .args(["--id", &format!("w-{i}")])
            .args(["--internal-token", &internal_token])
            .args(["--lease-ttl", "5s"])
            .args(&options.worker_args)
            .envs(store_env.iter().map(|(k, v)| (k, v)));
        workers.push(spawn_server(
            &format!("w-{i}"),
            cmd,
            &logs,
            port,
            metrics,
            started,
        )?);
    }
    let mut routers = Vec::new();
    for i in 0..options.routers {
        progress(&format!("starting router r-{i}"));
        let (port, metrics) = (free_port(), free_port());
        let mut cmd = Command::new(options.bin_dir.join("router"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--etcd", &client_url])
            .args(["--internal-token", &internal_token])
            .args(["--id", &format!("r-{i}")])
            .args(&options.router_args);
        routers.push(spawn_server(
            &format!("r-{i}"),
            cmd,
            &logs,
            port,
            metrics,
            started,
        )?);
    }
    // Routers start while workers come up; each is ready once it has a live worker.
    for p in workers.iter().chain(&routers) {
        wait_ready(p, &format!("{}/v2/health/ready", p.url)).await?;
    }
    Ok(FleetState {
        run_dir: run_dir.to_owned(),
        etcd,
        s3,
        workers,
        routers,
        store_url,
        store_env,
        internal_token,
        memory_budget: options.memory_budget,
        bin_dir: std::fs::canonicalize(&options.bin_dir)?,
    })
}

/// Where everything is, for a person: URLs, logs, and how to reach it with shardctl.
pub fn describe(state: &FleetState) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "run directory: {}", state.run_dir.display());
    let _ = writeln!(s, "etcd:          {}", state.etcd.url);
    let _ = writeln!(s, "model store:   {}", state.store_url);
    for p in state.routers.iter().chain(&state.workers) {
        let _ = writeln!(
            s,
            "{:<14} {}  (metrics {}, log {})",
            format!("{}:", p.name),
            p.url,
            p.metrics_url.as_deref().unwrap_or("-"),
            p.log.display()
        );
    }
    s
}

/// Starts a worker or router listening on `port` with `/metrics` on `metrics_port`, and
/// adds it to `started`.
fn spawn_server(
    name: &str,
    cmd: Command,
    logs: &Path,
    port: u16,
    metrics_port: u16,
    started: &mut Vec<ProcessRecord>,
) -> anyhow::Result<ProcessRecord> {
    let url = format!("http://127.0.0.1:{port}");
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let p = spawn(name, cmd, logs, url, Some(metrics))?;
    started.push(p.clone());
    Ok(p)
}

/// Creates `tenant` (with its own shard size, else the placement default) with
/// `shardctl tenant create` and returns its API key.
pub fn create_tenant(
    state: &FleetState,
    tenant: &str,
    shard_size: Option<u32>,
) -> anyhow::Result<String> {
    let mut cmd = state.shardctl();
    cmd.args(["--json", "tenant", "create", tenant]);
    if let Some(k) = shard_size {
        cmd.args(["--shard-size", &k.to_string()]);
    }
    let out = run_shardctl(&mut cmd)?;
    out["api_key"]
        .as_str()
        .map(str::to_owned)
        .context("shardctl tenant create printed no api_key")
}

/// Publishes the model in `dir` (`config.json` + `model.safetensors`) with `shardctl
/// publish` and makes it live.
pub fn publish(
    state: &FleetState,
    tenant: &str,
    model: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut cmd = state.shardctl();
    cmd.args(["--json", "publish", "--tenant", tenant, "--model", model])
        .args(["--version", version, "--store", &state.store_url])
        .arg(dir);
    run_shardctl(&mut cmd).map(drop)
}

/// Writes `keys.json` into the run directory (mode 0600: it holds secrets).
pub fn write_keys(run_dir: &Path, keys: &[TenantKey]) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = run_dir.join(KEYS_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(&serde_json::to_vec_pretty(keys)?)?;
    Ok(path)
}

fn run_shardctl(cmd: &mut Command) -> anyhow::Result<serde_json::Value> {
    let out = cmd.stdin(Stdio::null()).output().context("run shardctl")?;
    if !out.status.success() {
        bail!(
            "shardctl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("shardctl printed invalid json")
}

/// Stops every process recorded in `run_dir` that is still the one `up` started;
/// returns the names of those it stopped. Leaves the run directory (logs) in place.
pub fn down(run_dir: &Path) -> anyhow::Result<Vec<String>> {
    let state = FleetState::load(run_dir)?;
    let mut stopped = Vec::new();
    for p in state.processes() {
        if stop(p)? {
            stopped.push(p.name.clone());
        }
    }
    std::fs::remove_file(run_dir.join(STATE_FILE)).ok();
    Ok(stopped)
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; `false` when the process was not ours
/// (already gone, or the PID now belongs to someone else).
fn stop(p: &ProcessRecord) -> anyhow::Result<bool> {
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
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    parse_stat(&stat).is_some_and(|(state, start)| state != 'Z' && start == p.start_time)
}

/// State and start time from a `/proc/<pid>/stat` line. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 come between the state (3) and the start time (22).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn spawn(
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
    let (_, start_time) =
        parse_stat(&stat).with_context(|| format!("unreadable /proc/{pid}/stat"))?;
    Ok(ProcessRecord {
        name: name.to_owned(),
        pid,
        start_time,
        log,
        url,
        metrics_url,
    })
}

async fn wait_ready(p: &ProcessRecord, url: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::parse_stat;
    use proptest::prelude::*;

    #[test]
    fn reads_state_and_start_time() {
        let stat =
            "4242 (router) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 2 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
    }

    proptest! {
        /// Command names with spaces and parentheses do not shift the fields.
        #[test]
        fn command_names_cannot_shift_fields(comm in "[ a-z()]{0,15}", start in any::<u64>()) {
            let stat = format!("7 ({comm}) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
            prop_assert_eq!(parse_stat(&stat), Some(('R', start)));
        }
    }
}
