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

mod process;
mod shardctl;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

pub use process::{ProcessRecord, default_bin_dir, is_ours, log_tail};
use process::{spawn, spawn_node, stop, wait_ready};
pub use shardctl::{create_tenant, publish, write_keys};
use shardline_testkit::fleet::Spec;
use shardline_testkit::{find_etcd, find_moto_server, free_port, http_client, single_member_args};

/// File in the run directory recording what `up` started.
pub const STATE_FILE: &str = "fleet.json";
/// File in the run directory with tenants' keys, the format `loadtest run --keys` reads
/// ([`crate::loadgen::keys`]).
pub const KEYS_FILE: &str = "keys.json";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to start (the flags of `loadtest fleet up`).
#[derive(Debug, Clone, clap::Args)]
pub struct FleetOptions {
    /// Run directory: fleet.json, keys.json, logs/, etcd/, store/.
    #[arg(long, default_value = "shardline-fleet")]
    pub run_dir: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[arg(long, default_value_t = 1)]
    pub routers: usize,
    /// Each worker's memory budget for models (e.g. 256MiB).
    // Passed as each worker's `--memory-budget`, in bytes.
    #[arg(long, default_value = "256MiB", value_parser = shardline_shared::units::parse_bytes)]
    pub memory_budget: u64,
    /// Workers evict models unused for this long.
    // Passed as the workers' `--idle-ttl` (humantime, e.g. `10m`).
    #[arg(long, default_value = "10m")]
    pub idle_ttl: String,
    /// Store models in moto's S3 server (from ./.venv) instead of a directory.
    #[arg(long)]
    pub s3: bool,
    /// Leave the fleet running and return (stop it with `loadtest fleet down`).
    // Read by the caller of [`up`] (which returns once the fleet is ready either way).
    #[arg(long)]
    pub detach: bool,
    /// Directory of the router, worker and shardctl binaries (default: beside this one).
    #[arg(long, default_value_os_t = default_bin_dir(), hide_default_value = true)]
    pub bin_dir: PathBuf,
    // Extra flags for every router (e.g. `--per-model-metrics`); not a flag.
    #[arg(skip)]
    pub router_args: Vec<String>,
    // Extra flags for every worker; not a flag.
    #[arg(skip)]
    pub worker_args: Vec<String>,
    // Extra flags for etcd (e.g. `--quota-backend-bytes`); not a flag.
    #[arg(skip)]
    pub etcd_args: Vec<String>,
}

/// Empties `run_dir` for a benchmark's own fleet: stops a fleet an earlier run left
/// there, then removes the directory.
pub fn clear_run_dir(run_dir: &Path) -> anyhow::Result<()> {
    if !run_dir.exists() {
        return Ok(());
    }
    if FleetState::load(run_dir).is_ok() {
        down(run_dir)?;
    }
    std::fs::remove_dir_all(run_dir).with_context(|| format!("empty {}", run_dir.display()))
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
    let mut etcd = Command::new(find_etcd()?);
    etcd.args(single_member_args(
        "shardline-local",
        &run_dir.join("etcd"),
        client,
        peer,
    ))
    .arg("--heartbeat-interval=50")
    .arg("--election-timeout=500")
    .args(&options.etcd_args);
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
        let spec = Spec::worker(&format!("w-{i}"), &client_url, &store_url)
            .set("--internal-token", &internal_token)
            .set("--memory-budget", options.memory_budget.to_string())
            .set("--idle-ttl", &options.idle_ttl)
            .set("--lease-ttl", "5s")
            .args(options.worker_args.iter().cloned())
            .envs(&store_env);
        workers.push(spawn_node(&options.bin_dir, &spec, &logs, started)?);
    }
    let mut routers = Vec::new();
    for i in 0..options.routers {
        progress(&format!("starting router r-{i}"));
        let spec = Spec::router(&format!("r-{i}"), &client_url)
            .set("--internal-token", &internal_token)
            .args(options.router_args.iter().cloned());
        routers.push(spawn_node(&options.bin_dir, &spec, &logs, started)?);
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
