//! A single-member etcd on loopback, with its data in a scratch directory, and the
//! `etcdctl` operations tests need on it: snapshot save and restore, alarms, defrag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::free_port;
use super::process::{ManagedProcess, is_port_conflict, on_path, program_from_env};

/// Environment variable naming the etcd binary to run.
pub const ETCD_BIN_ENV: &str = "SHARDLINE_ETCD_BIN";

/// Environment variable naming the etcdctl binary to run.
pub const ETCDCTL_BIN_ENV: &str = "SHARDLINE_ETCDCTL_BIN";

/// The member name (and cluster token) of every test etcd.
const NAME: &str = "shardline-test";

/// How long etcd gets to report healthy after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times `start` picks new ports when another process took one first.
const START_ATTEMPTS: usize = 3;

/// A real etcd server for one test, killed (and its data deleted) on drop.
///
/// The binary is `$SHARDLINE_ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`
/// (Debian's `etcd-server`). The client and peer ports stay the same across
/// [`restart`](Self::restart), and so does the data directory, so a restart looks to
/// clients like a real etcd outage and recovery.
#[derive(Debug)]
pub struct EtcdProcess {
    process: ManagedProcess,
    client_port: u16,
    peer_port: u16,
}

impl EtcdProcess {
    /// Starts etcd on two free loopback ports and waits until `/health` says it is healthy.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`start`](Self::start) with extra flags, e.g. `--quota-backend-bytes=…`; they are
    /// kept for restarts.
    pub async fn start_with(extra: &[String]) -> anyhow::Result<Self> {
        let program = find_etcd()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&program, extra).await {
                Err(e) if attempt < START_ATTEMPTS && is_port_conflict(&e) => attempt += 1,
                started => return started,
            }
        }
    }

    async fn start_once(program: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let (client_port, peer_port) = (free_port(), free_port());
        let process = ManagedProcess::new("etcd", program)?;
        let data_dir = process.dir().join("data");
        let mut process = process
            .args(single_member_args(NAME, &data_dir, client_port, peer_port))
            .args(extra)
            // A lone member elects itself after one election timeout; the default (1 s) is
            // paid on every start and restart. Nothing else depends on these with one member.
            .arg("--heartbeat-interval=20")
            .arg("--election-timeout=200");
        process.spawn().await?;
        let mut etcd = Self {
            process,
            client_port,
            peer_port,
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/health", self.endpoint());
        self.process
            .wait_http_ready(&url, READY_TIMEOUT, |status, body| {
                status.is_success()
                    && serde_json::from_str::<serde_json::Value>(body)
                        .is_ok_and(|v| v["health"] == "true")
            })
            .await
    }

    /// The client URL, `http://127.0.0.1:PORT`, for `etcd_client::Client::connect`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port (nothing connects to it; it is reserved so restarts can reuse it).
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The data directory, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir().join("data")
    }

    /// Runs `etcdctl --endpoints=<this etcd> ARGS` (API v3) and returns its stdout; an
    /// exit other than 0 is an error carrying stderr.
    pub async fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![format!("--endpoints={}", self.endpoint())];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run_etcdctl(&all).await
    }

    /// `etcdctl snapshot save PATH`: a backup of the whole keyspace at this moment.
    pub async fn snapshot_save(&self, path: &Path) -> anyhow::Result<()> {
        self.etcdctl(&["snapshot", "save", &path.display().to_string()])
            .await
            .map(|_| ())
    }

    /// An operator's restore: SIGKILL etcd, delete its data directory, `etcdctl snapshot
    /// restore` the backup into it (same member name, peer URL and cluster token, so the
    /// cluster id stays and the revision goes back to the backup's), start etcd on the
    /// same ports and wait until it is healthy.
    pub async fn restore(&mut self, snapshot: &Path) -> anyhow::Result<()> {
        self.process.kill().await?;
        let data_dir = self.data_dir();
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("remove {}", data_dir.display()))?;
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        run_etcdctl(&[
            "snapshot".into(),
            "restore".into(),
            snapshot.display().to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--name={NAME}"),
            format!("--initial-cluster={NAME}={peer_url}"),
            format!("--initial-cluster-token={NAME}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
        ])
        .await?;
        self.process.spawn().await?;
        self.wait_ready().await
    }

    /// Stops etcd if it runs, then starts it again on the same ports and data directory and
    /// waits until it is healthy.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop().await?;
        self.process.spawn().await?;
        self.wait_ready().await
    }
}

/// The process itself: `pid`, `log_path`, `stop` (SIGTERM), `kill` (SIGKILL), `pause`
/// (SIGSTOP) and `resume` (SIGCONT) are [`ManagedProcess`]'s. A kill is a crash that
/// committed writes survive (etcd fsyncs its WAL); a paused etcd keeps its connections
/// open while clients time out.
impl std::ops::Deref for EtcdProcess {
    type Target = ManagedProcess;
    fn deref(&self) -> &ManagedProcess {
        &self.process
    }
}

impl std::ops::DerefMut for EtcdProcess {
    fn deref_mut(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }
}

/// The flags of a one-member etcd cluster `name` on loopback ports `client_port` (clients)
/// and `peer_port`, its data in `data_dir` (election timing is the caller's).
pub fn single_member_args(
    name: &str,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        "--initial-cluster-state=new".to_owned(),
        format!("--initial-cluster-token={name}"),
    ]
}

async fn run_etcdctl(args: &[String]) -> anyhow::Result<String> {
    let program = find_etcdctl()?;
    let out = tokio::process::Command::new(&program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .await
        .with_context(|| format!("run {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "etcdctl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    Ok(stdout)
}

/// The etcdctl binary: `$SHARDLINE_ETCDCTL_BIN`, else `etcdctl` on `PATH`, else beside
/// the etcd binary.
pub fn find_etcdctl() -> anyhow::Result<PathBuf> {
    program_from_env(ETCDCTL_BIN_ENV)?
        .or_else(|| on_path("etcdctl"))
        .or_else(|| {
            let etcd = find_etcd().ok()?;
            Some(etcd.with_file_name("etcdctl")).filter(|p| p.is_file())
        })
        .with_context(|| {
            format!(
                "etcdctl not found: install it (apt-get install etcd-client) or set {ETCDCTL_BIN_ENV}"
            )
        })
}

/// The etcd binary: `$SHARDLINE_ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
pub fn find_etcd() -> anyhow::Result<PathBuf> {
    program_from_env(ETCD_BIN_ENV)?
        .or_else(|| on_path("etcd"))
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
        .with_context(|| {
            format!(
                "etcd not found: install it (apt-get install etcd-server) or set {ETCD_BIN_ENV}"
            )
        })
}
