//! A single-member etcd on loopback, with its data in a scratch directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::free_port;
use super::process::{ManagedProcess, is_port_conflict, on_path, program_from_env};

/// Environment variable naming the etcd binary to run.
pub const ETCD_BIN_ENV: &str = "SHARDLINE_ETCD_BIN";

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
        let program = find_etcd()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&program).await {
                Err(e) if attempt < START_ATTEMPTS && is_port_conflict(&e) => attempt += 1,
                started => return started,
            }
        }
    }

    async fn start_once(program: &Path) -> anyhow::Result<Self> {
        let (client_port, peer_port) = (free_port(), free_port());
        let process = ManagedProcess::new("etcd", program)?;
        let data_dir = process.dir().join("data");
        let mut process = process
            .args(single_member_args(
                "shardline-test",
                &data_dir,
                client_port,
                peer_port,
            ))
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
