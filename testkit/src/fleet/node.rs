//! One worker or router of a test fleet: its command line ([`Spec`]), the two ways to
//! run it — a real process ([`Spec::spawn`]) or the caller's `serve()` in this process
//! ([`Spec::launch`] with a [`Launcher`]) — and the running [`Node`].
//!
//! Both ways take the same argument list, so a flag a test sets means the same thing in
//! either. The kit cannot call `serve()` itself (the worker and router crates use this
//! kit in their tests), so in-process mode takes a [`Launcher`] from the test suite: a
//! function of a [`Start`] that parses `start.args` with the binary's own clap type and
//! runs its `serve()` on the bound listeners until `start.shutdown` completes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{ManagedProcess, TOKEN, free_port};

/// How long a node gets to answer `/v2/health/ready` after a start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A boxed, sendable future (what a [`Launcher`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Which binary a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    Router,
}

impl Role {
    /// The binary's name (and `argv[0]` of its argument list).
    pub fn binary_name(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Router => "router",
        }
    }
}

/// What one node is started with: its id, its flags and its environment. The listen
/// addresses are added when it starts ([`Spec::command_line`]).
#[derive(Clone, Debug)]
pub struct Spec {
    pub role: Role,
    pub id: String,
    /// `--flag value` pairs; [`set`](Self::set) replaces a flag already there (clap
    /// refuses most flags given twice).
    flags: Vec<(String, String)>,
    /// Raw arguments appended after the flags.
    extra: Vec<String>,
    /// Environment of a process (the store's `AWS_*`); handed to a launcher as is.
    pub env: Vec<(String, String)>,
    /// The process's descriptor limit (`ulimit -n`), set with `prlimit` (processes only).
    pub nofile: Option<u64>,
}

impl Spec {
    /// A worker of the test token, `--memory-budget 256MiB --idle-ttl 10m`.
    pub fn worker(id: &str, etcd: &str, store_url: &str) -> Self {
        Self::new(Role::Worker, id)
            .set("--etcd", etcd)
            .set("--store", store_url)
            .set("--memory-budget", "256MiB")
            .set("--idle-ttl", "10m")
    }

    /// A router of the test token, `--controller-lease-ttl 3s`.
    pub fn router(id: &str, etcd: &str) -> Self {
        Self::new(Role::Router, id)
            .set("--etcd", etcd)
            .set("--controller-lease-ttl", "3s")
    }

    fn new(role: Role, id: &str) -> Self {
        Self {
            role,
            id: id.to_owned(),
            flags: vec![
                ("--id".into(), id.into()),
                ("--internal-token".into(), TOKEN.into()),
            ],
            extra: vec![],
            env: vec![],
            nofile: None,
        }
    }

    /// Runs the process with at most `n` open descriptors (soft and hard `ulimit -n`,
    /// through `prlimit`; an in-process node ignores it).
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Sets `flag` to `value`, replacing an earlier value.
    pub fn set(mut self, flag: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value,
            None => self.flags.push((flag.to_owned(), value)),
        }
        self
    }

    /// Appends raw arguments (a switch, or `--flag=value`).
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds environment variables.
    pub fn envs(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// The whole argument list, `argv[0]` first, serving on `listen` and `/metrics` on
    /// `metrics`.
    pub fn command_line(&self, listen: SocketAddr, metrics: SocketAddr) -> Vec<String> {
        let mut argv = vec![self.role.binary_name().to_owned()];
        let listens = [
            ("--listen", listen.to_string()),
            ("--metrics-listen", metrics.to_string()),
        ];
        for (flag, value) in listens
            .iter()
            .map(|(f, v)| (*f, v))
            .chain(self.flags.iter().map(|(f, v)| (f.as_str(), v)))
        {
            argv.push(flag.to_owned());
            argv.push(value.clone());
        }
        argv.extend(self.extra.iter().cloned());
        argv
    }

    /// Starts the workspace binary (or `program`) on free loopback ports and waits until
    /// it is ready.
    pub async fn spawn(self, program: Option<PathBuf>) -> anyhow::Result<Node> {
        let addr = loopback(free_port());
        let metrics = loopback(free_port());
        let program = program.unwrap_or_else(|| crate::binary(self.role.binary_name()));
        let args = self.command_line(addr, metrics).into_iter().skip(1);
        // `prlimit` sets the limit and then executes the program in its place (same pid).
        let mut process = match self.nofile {
            Some(n) => ManagedProcess::new(self.id.clone(), "prlimit")?
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(program)
                .args(args),
            None => ManagedProcess::new(self.id.clone(), program)?.args(args),
        };
        for (k, v) in &self.env {
            process = process.env(k, v);
        }
        process.spawn().await?;
        let tls = self.flags.iter().any(|(f, _)| f == "--tls-cert");
        process
            .wait_http_ready(&ready_url(addr, tls), READY_TIMEOUT, |s, _| s.is_success())
            .await?;
        Node::new(self, addr, metrics, Run::Process(Box::new(process)))
    }

    /// Runs the node in this process with `launcher` (on the current runtime), on
    /// listeners bound here, and waits until it is ready.
    pub async fn launch(self, launcher: &Launcher) -> anyhow::Result<Node> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (addr, metrics) = (listener.local_addr()?, metrics_listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let start = Start {
            id: self.id.clone(),
            args: self.command_line(addr, metrics),
            env: self.env.clone(),
            listener,
            metrics_listener,
            shutdown: Box::pin(async {
                let _ = stopped.await;
            }),
        };
        let id = self.id.clone();
        let run = (launcher.0)(start);
        let task = tokio::spawn(async move {
            let result = run.await;
            if let Err(e) = &result {
                eprintln!("shardline harness: in-process {id} failed: {e:#}");
            }
            result
        });
        let node = Node::new(
            self,
            addr,
            metrics,
            Run::InProcess {
                stop: Some(stop),
                task,
            },
        )?;
        node.wait_in_process_ready().await;
        Ok(node)
    }
}

/// What a [`Launcher`] is given: the node's argument list (as a process would get it),
/// its environment, its two bound listeners and the future that ends it.
#[allow(missing_debug_implementations, reason = "a future has no Debug")]
pub struct Start {
    pub id: String,
    /// `argv[0]` (`worker`/`router`) first, then every flag: parse with
    /// `WorkerArgs::try_parse_from(&start.args)`. `--listen` and `--metrics-listen`
    /// name [`listener`](Self::listener) and [`metrics_listener`](Self::metrics_listener).
    pub args: Vec<String>,
    /// The environment a process would get (the store's `AWS_*`), to open the store with.
    pub env: Vec<(String, String)>,
    pub listener: TcpListener,
    pub metrics_listener: TcpListener,
    /// Completes when the node is to stop gracefully.
    pub shutdown: BoxFuture<()>,
}

/// Runs one worker or router in this process: `serve()` of the test suite's own crate.
#[derive(Clone)]
pub struct Launcher(Arc<dyn Fn(Start) -> BoxFuture<anyhow::Result<()>> + Send + Sync>);

impl Launcher {
    /// Wraps `run`, which serves until `start.shutdown` completes.
    pub fn new<F, Fut>(run: F) -> Self
    where
        F: Fn(Start) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self(Arc::new(move |start| Box::pin(run(start))))
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Launcher")
    }
}

/// Which roles run in this process (the others run as processes).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub worker: Option<Launcher>,
    pub router: Option<Launcher>,
}

impl Launch {
    /// Workers in this process, routers as processes.
    pub fn workers(worker: Launcher) -> Self {
        Self {
            worker: Some(worker),
            router: None,
        }
    }

    /// The launcher for `role`, if it runs in this process.
    pub fn get(&self, role: Role) -> Option<&Launcher> {
        match role {
            Role::Worker => self.worker.as_ref(),
            Role::Router => self.router.as_ref(),
        }
    }
}

enum Run {
    Process(Box<ManagedProcess>),
    InProcess {
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<anyhow::Result<()>>,
    },
}

/// A running worker or router. Dropping it kills it (a process) or aborts its task.
pub struct Node {
    pub id: String,
    pub role: Role,
    /// Where it serves (`--listen`).
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub url: String,
    pub metrics_url: String,
    /// A loopback client without a proxy.
    pub http: reqwest::Client,
    run: Run,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("addr", &self.addr)
            .field("in_process", &self.process().is_none())
            .finish_non_exhaustive()
    }
}

impl Node {
    fn new(spec: Spec, addr: SocketAddr, metrics: SocketAddr, run: Run) -> anyhow::Result<Self> {
        Ok(Self {
            id: spec.id,
            role: spec.role,
            addr,
            url: format!("http://{addr}"),
            metrics_url: format!("http://{metrics}/metrics"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .context("build http client")?,
            run,
        })
    }

    /// Polls readiness; panics if `serve()` ended first (its error is on stderr).
    async fn wait_in_process_ready(&self) {
        let url = ready_url(self.addr, false);
        let what = format!("in-process {} ready at {url}", self.id);
        crate::wait::eventually(&what, READY_TIMEOUT, || async {
            if let Run::InProcess { task, .. } = &self.run {
                assert!(!task.is_finished(), "in-process {} stopped", self.id);
            }
            let r = self.http.get(&url).send().await;
            r.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// The process, unless the node runs in this process.
    pub fn process(&self) -> Option<&ManagedProcess> {
        match &self.run {
            Run::Process(p) => Some(p),
            Run::InProcess { .. } => None,
        }
    }

    /// The process, mutably (to pause, resume or restart it).
    pub fn process_mut(&mut self) -> Option<&mut ManagedProcess> {
        match &mut self.run {
            Run::Process(p) => Some(p),
            Run::InProcess { .. } => None,
        }
    }

    /// The operating-system process id of a node run as a process.
    pub fn pid(&self) -> Option<u32> {
        self.process().and_then(ManagedProcess::pid)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.run {
            Run::Process(p) => p.is_running(),
            Run::InProcess { task, .. } => !task.is_finished(),
        }
    }

    /// A crash: SIGKILL for a process; for an in-process node its `serve()` future is
    /// dropped (tasks it spawned detached may outlive it — test crashes with processes).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        match &mut self.run {
            Run::Process(p) => p.kill().await,
            Run::InProcess { stop, task } => {
                stop.take();
                task.abort();
                let _ = task.await;
                Ok(())
            }
        }
    }

    /// A clean shutdown (SIGTERM, or the shutdown future), waited for up to 10 s.
    pub async fn stop(mut self) {
        match &mut self.run {
            Run::Process(p) => {
                let _ = p.stop().await;
            }
            Run::InProcess { stop, task } => {
                if let Some(tx) = stop.take() {
                    let _ = tx.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Run::InProcess { task, .. } = &self.run {
            task.abort();
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The readiness probe of a node serving on `addr` (over TLS when `tls`: the probe
/// only asks whether the child serves, so it takes any certificate; the TLS tests check
/// certificates themselves).
fn ready_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}/v2/health/ready")
}
