//! moto's S3 server on loopback, with one bucket created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::free_port;
use super::process::{ManagedProcess, http_client, is_port_conflict, venv_program};

/// Environment variable naming the `moto_server` executable to run.
pub const MOTO_SERVER_ENV: &str = "SHARDLINE_MOTO_SERVER";

/// The bucket [`S3Process::start`] creates.
pub const DEFAULT_BUCKET: &str = "shardline-test";

/// How long moto gets to answer after a start (it imports a lot of Python).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times `start` picks a new port when another process took it first.
const START_ATTEMPTS: usize = 3;

/// A real S3-compatible server (moto) for one test, killed on drop.
///
/// The executable is `$SHARDLINE_MOTO_SERVER`, else `.venv/bin/moto_server` in the
/// workspace root (made by `just venv`), else `moto_server` on `PATH`. moto checks no
/// signatures; the credentials in [`env`](Self::env) are placeholders.
///
/// moto keeps everything in memory: [`restart`](Self::restart) and [`kill`](Self::kill) lose
/// every object (restart re-creates the empty bucket). A test of an S3 outage that needs
/// the data afterwards uses [`pause`](Self::pause) and [`resume`](Self::resume) instead.
#[derive(Debug)]
pub struct S3Process {
    process: ManagedProcess,
    port: u16,
    bucket: String,
    /// After [`kill`](Self::kill): resets every connection to the port, which no other
    /// test process can take meanwhile.
    holder: Option<tokio::task::JoinHandle<()>>,
}

impl S3Process {
    /// Starts moto on a free loopback port and creates the bucket [`DEFAULT_BUCKET`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_bucket(DEFAULT_BUCKET).await
    }

    /// Starts moto on a free loopback port and creates `bucket`.
    pub async fn start_with_bucket(bucket: &str) -> anyhow::Result<Self> {
        let program = find_moto_server()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&program, bucket).await {
                Err(e) if attempt < START_ATTEMPTS && is_port_conflict(&e) => attempt += 1,
                started => return started,
            }
        }
    }

    async fn start_once(program: &Path, bucket: &str) -> anyhow::Result<Self> {
        let port = free_port();
        let mut process = ManagedProcess::new("moto", program)?
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            // So that the log file is complete when a failing test prints it.
            .env("PYTHONUNBUFFERED", "1");
        process.spawn().await?;
        let mut s3 = Self {
            process,
            port,
            bucket: bucket.to_owned(),
            holder: None,
        };
        s3.wait_ready_and_create_bucket().await?;
        Ok(s3)
    }

    async fn wait_ready_and_create_bucket(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/", self.endpoint());
        self.process
            .wait_http_ready(&url, READY_TIMEOUT, |status, _| status.is_success())
            .await?;
        // Unsigned requests are fine for moto; a bare PUT creates the bucket in us-east-1.
        let url = format!("{}/{}", self.endpoint(), self.bucket);
        let resp = http_client(Duration::from_secs(10))?
            .put(&url)
            .send()
            .await
            .with_context(|| format!("create bucket: PUT {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!("create bucket: PUT {url} answered {status}: {body}");
        }
        Ok(())
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT` (path-style requests, plain HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket as an object-store URL, `s3://BUCKET`.
    pub fn store_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    /// Environment for a client of this server (`object_store`'s `AmazonS3Builder::from_env`
    /// and the AWS SDKs read these): endpoint, placeholder credentials, region, plain HTTP.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Stops moto if it runs, starts it again on the same port and re-creates the bucket,
    /// which is empty: moto keeps objects in memory only.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop().await?;
        self.release_port().await;
        self.process.spawn().await?;
        self.wait_ready_and_create_bucket().await
    }
}

impl S3Process {
    /// SIGKILL, and the store stays unreachable: the port is held by a listener that resets
    /// every connection until [`restart`](Self::restart) or drop. Without it another test
    /// process's server (nextest runs tests in parallel processes) could take the freed
    /// port and answer in moto's place.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("holding port {} after killing moto", self.port))?;
        self.holder = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Linger 0: close with a reset, as a dead server's port would refuse.
                let _ = stream.set_zero_linger();
            }
        }));
        Ok(())
    }

    async fn release_port(&mut self) {
        if let Some(holder) = self.holder.take() {
            holder.abort();
            let _ = holder.await;
        }
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            holder.abort();
        }
    }
}

/// The process itself: `pid`, `log_path`, `stop` (SIGTERM), `kill` (SIGKILL), `pause`
/// (SIGSTOP) and `resume` (SIGCONT) are [`ManagedProcess`]'s. moto keeps objects in memory:
/// a stop or kill loses them, a pause (S3 "going down") keeps them.
impl std::ops::Deref for S3Process {
    type Target = ManagedProcess;
    fn deref(&self) -> &ManagedProcess {
        &self.process
    }
}

impl std::ops::DerefMut for S3Process {
    fn deref_mut(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }
}

pub fn find_moto_server() -> anyhow::Result<PathBuf> {
    venv_program(MOTO_SERVER_ENV, "moto_server", "moto_server")?.with_context(|| {
        format!(
            "moto_server not found: run `just venv` in the workspace root \
                 (or set {MOTO_SERVER_ENV})"
        )
    })
}
