//! One external server process owned by a test: its scratch directory, its log file, its
//! readiness poll, its signals and its teardown.
//!
//! [`EtcdProcess`](super::EtcdProcess) and [`S3Process`](super::S3Process) are thin layers
//! over [`ManagedProcess`]; the same type will start real router and worker binaries. Every
//! process gets its own [`TempDir`] holding `process.log` (stdout and stderr of every start,
//! appended) and whatever data the server keeps there. Dropping a [`ManagedProcess`] kills the
//! process and reaps it; if the thread is panicking (a failed test), the directory is kept and
//! its path and the log's last lines are printed to stderr.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How many log lines an error message or a kept-logs notice shows.
const LOG_TAIL_LINES: usize = 40;

/// How long [`ManagedProcess::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// An external process started by a test, killed when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// `None` only inside `Drop`, once the directory has been kept for a failed test.
    dir: Option<TempDir>,
    dir_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Set by `pause` so that `stop` knows a SIGTERM needs a SIGCONT to be delivered.
    paused: bool,
    starts: u32,
}

impl ManagedProcess {
    /// Prepares (does not start) `program`, with a fresh scratch directory and log file.
    ///
    /// `name` labels log lines and error messages. Add arguments with [`arg`](Self::arg),
    /// [`args`](Self::args) and [`env`](Self::env); they may refer to [`dir`](Self::dir).
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let name = name.into();
        let dir = tempfile::Builder::new()
            .prefix(&format!("shardline-{name}-"))
            .tempdir()
            .context("create scratch directory")?;
        let dir_path = dir.path().to_owned();
        let log_path = dir_path.join("process.log");
        Ok(Self {
            name,
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: Some(dir),
            dir_path,
            log_path,
            child: None,
            paused: false,
            starts: 0,
        })
    }

    /// Appends one command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the process (on top of the test's own environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The scratch directory, removed on drop unless the thread is panicking.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The log file: stdout and stderr of every start, appended.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The operating-system process id, while the process is started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the process; after [`stop`](Self::stop) or [`kill`](Self::kill) it starts
    /// again with the same arguments, directory and log file.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        writeln!(
            log,
            "=== shardline harness: start #{} of {}: {} {}",
            self.starts,
            self.name,
            self.program.display(),
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        )?;
        let stderr = log.try_clone().context("clone log file handle")?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Polls `GET url` until `accept(status, body)` holds, the process exits, or `timeout`
    /// passes; the error in the last two cases carries the log's last lines.
    pub async fn wait_http_ready(
        &mut self,
        url: &str,
        timeout: Duration,
        accept: impl Fn(StatusCode, &str) -> bool,
    ) -> anyhow::Result<()> {
        // A TLS child's readiness: whether it serves, whatever its certificate.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
            .tls_danger_accept_invalid_certs(url.starts_with("https:"))
            .build()
            .context("build http client")?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                bail!("{} is not running", self.name);
            };
            if let Some(status) = child.try_wait().context("poll child")? {
                self.child = None;
                bail!(
                    "{} exited ({status}) before {url} was ready\n{}",
                    self.name,
                    self.describe_log()
                );
            }
            let last = match client.get(url).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if accept(status, &body) {
                        return Ok(());
                    }
                    format!("{status}: {}", body.chars().take(200).collect::<String>())
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready at {url} after {timeout:?} (last answer: {last})\n{}",
                    self.name,
                    self.describe_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL, then waits for the process to be gone (a crash, as far as its peers can tell).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            self.paused = false;
            child
                .kill()
                .await
                .with_context(|| format!("kill {}", self.name))?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after a grace period).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            self.child = None;
            return Ok(());
        };
        send_signal(pid, "TERM")?;
        if self.paused {
            send_signal(pid, "CONT")?;
            self.paused = false;
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(waited) => {
                waited.with_context(|| format!("wait for {}", self.name))?;
                self.child = None;
                Ok(())
            }
            Err(_) => self.kill().await,
        }
    }

    /// SIGSTOP: the process keeps its sockets and memory but answers nothing (the kernel
    /// still accepts TCP connections into the listen backlog, so clients time out rather
    /// than being refused).
    pub fn pause(&mut self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        send_signal(pid, "STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT: undoes [`pause`](Self::pause).
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        send_signal(pid, "CONT")?;
        self.paused = false;
        Ok(())
    }

    /// The last `lines` lines of the log file.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read log: {e}>"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn describe_log(&self) -> String {
        format!(
            "--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL works on a stopped (paused) process too. Reap it here rather than
            // leaving it to tokio's orphan queue, so the process is gone when drop returns.
            let _ = child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "shardline harness: test failed; kept {} files in {}\n{}",
                self.name,
                kept.display(),
                self.describe_log()
            );
        }
    }
}

/// A plain-HTTP client for loopback servers: no proxy, short timeouts.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .context("build http client")
}

/// Whether starting failed because a port picked by [`free_port`](super::free_port) was
/// taken by someone else in between (worth one more try with new ports).
pub fn is_port_conflict(err: &anyhow::Error) -> bool {
    format!("{err:#}")
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// The executable named by environment variable `var`, if set (it must then exist).
pub fn program_from_env(var: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os(var) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{var}={} does not exist", path.display());
    }
    Ok(Some(path))
}

/// A tool from the test venv: `$var` if set (it must then exist), else `.venv/bin/<name>`
/// in the workspace root (made by `just venv`), else `fallback` on `PATH`.
pub fn venv_program(var: &str, name: &str, fallback: &str) -> anyhow::Result<Option<PathBuf>> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join(".venv/bin").join(name));
    Ok(program_from_env(var)?
        .or_else(|| venv.filter(|p| p.is_file()))
        .or_else(|| on_path(fallback)))
}

/// The first `name` found in the directories of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn port_conflicts_are_recognised_in_context_chains() {
        let err = anyhow::anyhow!("listen tcp 127.0.0.1:4000: bind: Address already in use")
            .context("etcd exited");
        assert!(is_port_conflict(&err));
        assert!(!is_port_conflict(&anyhow::anyhow!("permission denied")));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() -> anyhow::Result<()> {
        let p = ManagedProcess::new("tail", "true")?;
        let mut f = File::create(p.log_path())?;
        for i in 0..100 {
            writeln!(f, "line {i}")?;
        }
        assert_eq!(p.log_tail(2), "line 98\nline 99");
        Ok(())
    }
}
