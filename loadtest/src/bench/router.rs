//! `loadtest bench-router`: the cost of the router's hop, as throughput and latency
//! ratios against the same worker reached directly, next to nginx as a plain reverse
//! proxy in front of the same worker, all measured in one run.
//!
//! It starts etcd, a `file://` model store, ONE release `worker` process, ONE release
//! `router` process (both found next to this executable) and nginx (master + `auto` or
//! N worker processes, a generated configuration in a scratch directory, keep-alive to
//! the worker, adding the internal token). It creates tenant `bench` (shard size 1, no
//! limits), publishes `mlp` (64 → 256 → 256 → 1) and `trivial` (64 → 1), and checks that
//! the three targets answer the same scores. Then, for `--rounds` rounds, for each model,
//! it loads each target in turn (direct, nginx, router, rotated) with the same closed-loop
//! client ([`load`](super::load): `--concurrency` keep-alive connections, `--warmup`
//! then a measured `--duration`) and the same request bytes (one row of 64 floats):
//!
//! - direct: `POST worker/v2/models/bench.<model>/infer` with `x-shardline-token`;
//! - nginx: `POST nginx/v2/models/bench.<model>/infer` (nginx adds the token);
//! - router: `POST router/v2/models/<model>/infer` with `Authorization: Bearer <key>`.
//!
//! Each round rotates the order of the targets. Each figure is the median of its rounds;
//! each ratio is the median of the rounds' ratios, each against the direct run of the
//! same round (paired: the machine's speed drifts by ±10 % over minutes on a shared
//! host, more than the gap being measured). The target: router ÷ direct throughput at
//! least nginx ÷ direct, for both models. A missed target is reported, not an error.
//! During each measured window it also reads the CPU time of the worker, of the proxy
//! (router, or nginx's master and workers), of this client process, and of the whole
//! machine (`/proc`), so that CPU per request and other load on the machine show.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;

use super::docs::{Section, machine, today};
use super::load::{self, LoadPlan, Measured, RequestSpec};
use crate::procfs::{machine_busy, process_cpu, tree_cpu};
use super::stack::{
    Control, TENANT, TOKEN, infer_body, router_spec, sibling, start_router, start_worker,
    wait_scores,
};
use super::stats::{median, ms, ratio};
use crate::models::MlpArtifact;
use shardline_testkit::{ManagedProcess, free_port, on_path, program_from_env};

const INPUT_DIM: usize = 64;
/// Environment variable naming the nginx binary to run.
pub const NGINX_BIN_ENV: &str = "SHARDLINE_NGINX_BIN";
/// The models: name and widths.
pub const MODELS: [(&str, &[usize]); 2] = [("mlp", &[64, 256, 256, 1]), ("trivial", &[64, 1])];
/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed("router", "## Router hop (`just bench-router`)");

/// The three ways to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    Nginx,
    Router,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Direct, Target::Nginx, Target::Router];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::Router => "router",
        }
    }
}

/// nginx's `worker_processes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxWorkers {
    /// One per core.
    Auto,
    Count(usize),
}

impl std::str::FromStr for NginxWorkers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Count(n)),
                _ => Err(format!("expected `auto` or a positive count, got {s:?}")),
            },
        }
    }
}

impl std::fmt::Display for NginxWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Count(n) => write!(f, "{n}"),
        }
    }
}

/// What to run (the flags of `loadtest bench-router`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    // The client's connections, windows and rounds (the same for every target).
    #[command(flatten)]
    pub load: LoadPlan,
    /// The router's `--threads` (default: its own, one per core).
    #[arg(long)]
    pub router_threads: Option<usize>,
    /// nginx's `worker_processes`: `auto` (one per core) or a count.
    #[arg(long, default_value = "auto")]
    pub nginx_workers: NginxWorkers,
    /// Models to run, comma-separated (`mlp`, `trivial`; default both).
    // Which of [`MODELS`] to run (all when empty).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load: LoadPlan::default(),
            router_threads: None,
            nginx_workers: NginxWorkers::Auto,
            models: Vec::new(),
        }
    }
}

impl Options {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        let mut s = format!(
            "loadtest bench-router {} --nginx-workers {}",
            self.load.flags(),
            self.nginx_workers
        );
        if let Some(t) = self.router_threads {
            let _ = write!(s, " --router-threads {t}");
        }
        if !self.models.is_empty() {
            let _ = write!(s, " --models {}", self.models.join(","));
        }
        s
    }
}

/// CPU seconds used during one measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub worker: f64,
    /// The router, or nginx (master and workers); zero for direct.
    pub proxy: f64,
    /// This process (the load client, plus the idle orchestration).
    pub client: f64,
    /// Every process on the machine (busy time of all cores).
    pub machine: f64,
    /// etcd (idle, but on the same cores).
    pub etcd: f64,
}

impl Cpu {
    /// Busy time on the machine that none of the benchmark's processes account for.
    pub fn others(&self) -> f64 {
        (self.machine - self.worker - self.proxy - self.client - self.etcd).max(0.0)
    }
}

/// One target, one model, one round.
#[derive(Debug, Clone)]
pub struct Run {
    pub load: Measured,
    pub cpu: Cpu,
    /// For the router: its serving threads taking connections at the end of the window
    /// (`shardline_router_serving_threads_active`).
    pub router_threads: Option<f64>,
}

/// A target's rounds for one model, and their medians.
#[derive(Debug, Clone)]
pub struct TargetResult {
    pub target: Target,
    pub runs: Vec<Run>,
}

impl TargetResult {
    pub fn throughput(&self) -> f64 {
        median(self.runs.iter().map(|r| r.load.throughput))
    }
    pub fn p50(&self) -> f64 {
        median(self.runs.iter().map(|r| ms(r.load.latency.p50)))
    }
    pub fn p99(&self) -> f64 {
        median(self.runs.iter().map(|r| ms(r.load.latency.p99)))
    }
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.load.errors).sum()
    }
    /// Median CPU µs per request of one component.
    pub fn cpu_us(&self, pick: impl Fn(&Cpu) -> f64) -> f64 {
        median(self.runs.iter().map(|r| r.load.cpu_us(pick(&r.cpu))))
    }
    /// Median of the cores busy with other work during the windows.
    pub fn other_cores(&self) -> f64 {
        median(self.runs.iter().map(|r| r.load.cores(r.cpu.others())))
    }
}

/// One model's results.
#[derive(Debug, Clone)]
pub struct ModelResult {
    pub name: String,
    pub dims: Vec<usize>,
    pub targets: Vec<TargetResult>,
}

impl ModelResult {
    pub fn get(&self, t: Target) -> &TargetResult {
        self.targets
            .iter()
            .find(|r| r.target == t)
            .unwrap_or_else(|| unreachable!("every target is measured"))
    }
    /// `t` throughput ÷ direct throughput in each round (the same round's direct run,
    /// measured next to it, is the baseline).
    pub fn round_throughput_ratios(&self, t: Target) -> Vec<f64> {
        self.paired(t, |r| r.load.throughput)
    }
    /// `t` throughput ÷ direct throughput: the median of the rounds' ratios.
    pub fn throughput_ratio(&self, t: Target) -> f64 {
        median(self.round_throughput_ratios(t).into_iter())
    }
    /// `t` p99 ÷ direct p99: the median of the rounds' ratios.
    pub fn p99_ratio(&self, t: Target) -> f64 {
        median(self.paired(t, |r| ms(r.load.latency.p99)).into_iter())
    }
    /// Rounds in which the router kept at least nginx's share of direct throughput.
    pub fn router_ahead_rounds(&self) -> usize {
        let router = self.round_throughput_ratios(Target::Router);
        let nginx = self.round_throughput_ratios(Target::Nginx);
        router.iter().zip(&nginx).filter(|(r, n)| r >= n).count()
    }
    /// The target: the router keeps at least nginx's share of direct throughput.
    pub fn met(&self) -> bool {
        self.throughput_ratio(Target::Router) >= self.throughput_ratio(Target::Nginx)
    }
    fn paired(&self, t: Target, figure: impl Fn(&Run) -> f64) -> Vec<f64> {
        let direct = &self.get(Target::Direct).runs;
        self.get(t)
            .runs
            .iter()
            .zip(direct)
            .map(|(r, d)| ratio(figure(r), figure(d)))
            .collect()
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub machine: String,
    pub date: String,
    pub nginx_version: String,
    pub models: Vec<ModelResult>,
}

impl Report {
    /// One line per model whose target is missed.
    pub fn misses(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|m| !m.met())
            .map(|m| {
                format!(
                    "target missed: {}: router ÷ direct {:.3} < nginx ÷ direct {:.3}",
                    m.name,
                    m.throughput_ratio(Target::Router),
                    m.throughput_ratio(Target::Nginx)
                )
            })
            .collect()
    }

    /// Markdown tables: figures per target, then the ratios.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s += "| Model | Target | req/s | p50 (ms) | p99 (ms) | errors | worker CPU (µs/req) | proxy CPU (µs/req) | client CPU (µs/req) | other load (cores) |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            for t in &m.targets {
                let proxy = if t.target == Target::Direct {
                    "—".to_owned()
                } else {
                    format!("{:.0}", t.cpu_us(|c| c.proxy))
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.3} | {:.3} | {} | {:.0} | {} | {:.0} | {:.2} |",
                    m.name,
                    t.target.name(),
                    t.throughput(),
                    t.p50(),
                    t.p99(),
                    t.errors(),
                    t.cpu_us(|c| c.worker),
                    proxy,
                    t.cpu_us(|c| c.client),
                    t.other_cores(),
                );
            }
        }
        s += "\n| Model | router ÷ direct (req/s) | nginx ÷ direct (req/s) | router p99 ÷ direct | nginx p99 ÷ direct | rounds router ≥ nginx | target: router ≥ nginx |\n";
        s += "|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {} of {} | {} |",
                m.name,
                m.throughput_ratio(Target::Router),
                m.throughput_ratio(Target::Nginx),
                m.p99_ratio(Target::Router),
                m.p99_ratio(Target::Nginx),
                m.router_ahead_rounds(),
                m.get(Target::Direct).runs.len(),
                if m.met() { "met" } else { "missed" },
            );
        }
        s
    }

    /// Each round's throughput per model and target, and each round's ratios to direct
    /// (to judge the noise).
    pub fn rounds_table(&self) -> String {
        let mut s = String::from("| Model | Target | req/s per round |\n|---|---|---|\n");
        let join = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
        for m in &self.models {
            for t in &m.targets {
                let per = join(&mut t.runs.iter().map(|r| format!("{:.0}", r.load.throughput)));
                let _ = writeln!(s, "| {} | {} | {per} |", m.name, t.target.name());
            }
            let threads = join(&mut m.get(Target::Router).runs.iter().map(|r| {
                r.router_threads
                    .map_or_else(|| "?".to_owned(), |n| format!("{n:.0}"))
            }));
            let _ = writeln!(
                s,
                "| {} | router serving threads in use (end of window) | {threads} |",
                m.name
            );
            for t in [Target::Router, Target::Nginx] {
                let per = join(
                    &mut m
                        .round_throughput_ratios(t)
                        .into_iter()
                        .map(|r| format!("{r:.3}")),
                );
                let _ = writeln!(s, "| {} | {} ÷ direct | {per} |", m.name, t.name());
            }
        }
        s
    }

    /// The generated part of the docs section ([`DOCS`]).
    pub fn docs(&self) -> String {
        let o = &self.options;
        let models: Vec<String> = self
            .models
            .iter()
            .map(|m| {
                let d: Vec<String> = m.dims.iter().map(ToString::to_string).collect();
                format!("`{}` ({})", m.name, d.join(" → "))
            })
            .collect();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {}, with `{}` ({}).",
            self.date,
            self.machine,
            o.command(),
            self.nginx_version
        );
        let _ = writeln!(
            s,
            "Router threads: {}; nginx `worker_processes {}`; {}; figures are medians of the rounds, ratios are medians of each round's ratio to that round's direct run. Models: {}.",
            o.router_threads
                .map_or_else(|| "default (one per core)".to_owned(), |t| t.to_string()),
            o.nginx_workers,
            o.load.describe(),
            models.join(", "),
        );
        s += "\n";
        s += &self.table();
        s += "\n";
        s += &self.rounds_table();
        s += "\n";
        s += &super::docs::verdict(
            &self.misses(),
            "Target met for every model: the router keeps at least nginx's share of direct throughput.",
        );
        s
    }

    /// The report as one JSON object (times in milliseconds).
    pub fn json(&self) -> serde_json::Value {
        let o = &self.options;
        let models: Vec<serde_json::Value> = self
            .models
            .iter()
            .map(|m| {
                let targets: serde_json::Map<String, serde_json::Value> = m
                    .targets
                    .iter()
                    .map(|t| {
                        let runs: Vec<serde_json::Value> = t
                            .runs
                            .iter()
                            .map(|r| {
                                serde_json::json!({
                                    "throughput": r.load.throughput,
                                    "p50_ms": ms(r.load.latency.p50), "p99_ms": ms(r.load.latency.p99),
                                    "min_ms": ms(r.load.latency.min), "max_ms": ms(r.load.latency.max),
                                    "count": r.load.latency.count, "errors": r.load.errors,
                                    "error_messages": r.load.error_messages,
                                    "connections": r.load.connections,
                                    "cpu_seconds": {
                                        "worker": r.cpu.worker, "proxy": r.cpu.proxy,
                                        "client": r.cpu.client, "etcd": r.cpu.etcd,
                                        "machine": r.cpu.machine, "others": r.cpu.others(),
                                    },
                                })
                            })
                            .collect();
                        let v = serde_json::json!({
                            "throughput": t.throughput(), "p50_ms": t.p50(), "p99_ms": t.p99(),
                            "errors": t.errors(),
                            "cpu_us_per_request": {
                                "worker": t.cpu_us(|c| c.worker),
                                "proxy": t.cpu_us(|c| c.proxy),
                                "client": t.cpu_us(|c| c.client),
                            },
                            "other_cores": t.other_cores(),
                            "rounds": runs,
                        });
                        (t.target.name().to_owned(), v)
                    })
                    .collect();
                serde_json::json!({
                    "model": m.name, "dims": m.dims, "targets": targets,
                    "ratios": {
                        "router_throughput": m.throughput_ratio(Target::Router),
                        "nginx_throughput": m.throughput_ratio(Target::Nginx),
                        "router_p99": m.p99_ratio(Target::Router),
                        "nginx_p99": m.p99_ratio(Target::Nginx),
                        "router_throughput_rounds": m.round_throughput_ratios(Target::Router),
                        "nginx_throughput_rounds": m.round_throughput_ratios(Target::Nginx),
                    },
                    "router_ahead_rounds": m.router_ahead_rounds(),
                    "met": m.met(),
                })
            })
            .collect();
        serde_json::json!({
            "benchmark": "router",
            "date": self.date, "machine": self.machine, "nginx": self.nginx_version,
            "options": {
                "load": o.load.json(),
                "router_threads": o.router_threads, "nginx_workers": o.nginx_workers.to_string(),
            },
            "models": models,
            "met": self.misses().is_empty(),
        })
    }
}

/// nginx's configuration: a plain reverse proxy to the worker on `worker_port`, with
/// keep-alive both ways, the internal token added, every path inside `dir`.
pub fn nginx_conf(dir: &Path, listen: u16, worker_port: u16, workers: NginxWorkers) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by `loadtest bench-router`: a plain reverse proxy to one worker.
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # nginx closes a keep-alive connection after 1000 requests by default (both ways);
    # neither the router nor hyper does, so neither does nginx here.
    keepalive_requests 1000000;

    upstream shardline_worker {{
        server 127.0.0.1:{worker_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://shardline_worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-shardline-token {TOKEN};
        }}
    }}
}}
"#
    )
}

/// The servers under test.
#[derive(Debug)]
struct Servers {
    worker: ManagedProcess,
    worker_addr: SocketAddr,
    router: ManagedProcess,
    router_addr: SocketAddr,
    router_metrics: SocketAddr,
    nginx: ManagedProcess,
    nginx_addr: SocketAddr,
}

impl Servers {
    fn addr(&self, t: Target) -> SocketAddr {
        match t {
            Target::Direct => self.worker_addr,
            Target::Nginx => self.nginx_addr,
            Target::Router => self.router_addr,
        }
    }

    async fn stop(mut self) {
        // nginx first: its workers outlive a SIGKILLed master, so stop it cleanly.
        let _ = self.nginx.stop().await;
        let _ = self.router.stop().await;
        let _ = self.worker.stop().await;
    }
}

/// Runs the benchmark. `progress` receives one line per phase and per measured run.
pub async fn run(options: &Options, progress: impl Fn(&str)) -> anyhow::Result<Report> {
    options.load.validate()?;
    let models: Vec<(&str, &[usize])> = MODELS
        .iter()
        .copied()
        .filter(|(name, _)| options.models.is_empty() || options.models.iter().any(|m| m == name))
        .collect();
    ensure!(
        !models.is_empty(),
        "--models: none of {:?} is known (mlp, trivial)",
        options.models
    );
    let worker_bin = sibling("worker")?;
    let router_bin = sibling("router")?;
    let nginx_bin = nginx_binary()?;
    let nginx_version = nginx_version(&nginx_bin);

    progress("starting etcd, creating tenant `bench` and publishing the models");
    let control = Control::start().await?;
    let mut built = Vec::new();
    for (i, (name, dims)) in models.iter().enumerate() {
        let m = MlpArtifact::random(dims, 42 + i as u64);
        control.publish(name, &m).await?;
        built.push((name.to_string(), m));
    }

    progress("starting the worker, the router and nginx");
    let servers = start_servers(
        options,
        &control.etcd.endpoint(),
        &control.store_url,
        &worker_bin,
        &router_bin,
        &nginx_bin,
    )
    .await?;
    let etcd_pid = control.etcd.pid().context("etcd is not running")?;
    let result = measure(options, &servers, etcd_pid, &control.key, &built, &progress).await;
    progress("stopping the servers");
    servers.stop().await;
    drop(control);
    let models = result?;
    Ok(Report {
        options: options.clone(),
        machine: machine(),
        date: today(),
        nginx_version,
        models,
    })
}

async fn start_servers(
    options: &Options,
    etcd: &str,
    store_url: &str,
    worker_bin: &Path,
    router_bin: &Path,
    nginx_bin: &Path,
) -> anyhow::Result<Servers> {
    let ready = |s: reqwest::StatusCode, _: &str| s.is_success();
    let timeout = Duration::from_secs(30);
    let (worker, worker_addr) = start_worker(worker_bin, etcd, store_url).await?;
    let (router, router_addr, router_metrics) =
        start_router(router_bin, etcd, options.router_threads).await?;

    let nginx_port = free_port();
    let nginx_addr: SocketAddr = format!("127.0.0.1:{nginx_port}").parse()?;
    let nginx = ManagedProcess::new("nginx", nginx_bin)?;
    let dir = nginx.dir().to_owned();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(&dir, nginx_port, worker_addr.port(), options.nginx_workers),
    )?;
    let mut nginx = nginx
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf);
    nginx.spawn().await?;
    // nginx has no health endpoint of its own: the worker's, through nginx.
    if let Err(e) = nginx
        .wait_http_ready(
            &format!("http://{nginx_addr}/v2/health/ready"),
            timeout,
            ready,
        )
        .await
    {
        let _ = nginx.stop().await;
        return Err(e.context(format!(
            "nginx error log:\n{}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        )));
    }
    Ok(Servers {
        worker,
        worker_addr,
        router,
        router_addr,
        router_metrics,
        nginx,
        nginx_addr,
    })
}

/// The request each target gets for `model`: same body bytes, different path and auth.
fn spec(
    servers: &Servers,
    target: Target,
    model: &str,
    key: &str,
    body: &Bytes,
) -> anyhow::Result<RequestSpec> {
    let addr = servers.addr(target);
    let internal = format!("/v2/models/{TENANT}.{model}/infer");
    match target {
        Target::Direct => RequestSpec::post_json(
            addr,
            &internal,
            &[("x-shardline-token", TOKEN)],
            body.clone(),
        ),
        Target::Nginx => RequestSpec::post_json(addr, &internal, &[], body.clone()),
        Target::Router => router_spec(addr, model, key, body.clone()),
    }
}

async fn measure(
    options: &Options,
    servers: &Servers,
    etcd: u32,
    key: &str,
    models: &[(String, MlpArtifact)],
    progress: &impl Fn(&str),
) -> anyhow::Result<Vec<ModelResult>> {
    let body = Bytes::from(infer_body(&input_row(INPUT_DIM), 1)?);
    let mut specs = Vec::new();
    for (name, _) in models {
        let mut per = Vec::new();
        for t in Target::ALL {
            per.push(Arc::new(spec(servers, t, name, key, &body)?));
        }
        specs.push(per);
    }

    progress("checking that every target answers the same scores");
    for ((name, _), per) in models.iter().zip(&specs) {
        let mut first: Option<serde_json::Value> = None;
        for (t, s) in Target::ALL.iter().zip(per) {
            let scores = wait_scores(s, Duration::from_secs(30))
                .await
                .with_context(|| format!("{name} via {}", t.name()))?;
            match &first {
                None => first = Some(scores),
                Some(want) => ensure!(
                    *want == scores,
                    "{name}: {} scored {scores}, direct {want}",
                    t.name()
                ),
            }
        }
    }

    let pids = Pids {
        worker: servers.worker.pid().context("the worker is not running")?,
        router: servers.router.pid().context("the router is not running")?,
        nginx: servers.nginx.pid().context("nginx is not running")?,
        etcd,
    };
    let mut results: Vec<ModelResult> = models
        .iter()
        .map(|(name, m)| ModelResult {
            name: name.clone(),
            dims: m.dims.clone(),
            targets: Target::ALL
                .iter()
                .map(|&target| TargetResult {
                    target,
                    runs: Vec::new(),
                })
                .collect(),
        })
        .collect();
    for round in 1..=options.load.rounds {
        for (mi, per) in specs.iter().enumerate() {
            for ti in round_order(round) {
                let t = &Target::ALL[ti];
                let mut run = load_once(options, per[ti].clone(), *t, &pids).await?;
                if *t == Target::Router {
                    run.router_threads = Some(
                        serving_threads(servers.router_metrics)
                            .await
                            .context("the router's serving threads")?,
                    );
                }
                progress(&format!(
                    "round {round}/{}: {:<7} {:<7} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  other load {:.2} cores",
                    options.load.rounds,
                    results[mi].name,
                    t.name(),
                    run.load.throughput,
                    ms(run.load.latency.p50),
                    ms(run.load.latency.p99),
                    run.load.errors,
                    run.load.cores(run.cpu.others()),
                ));
                for m in &run.load.error_messages {
                    progress(&format!("  error: {m}"));
                }
                results[mi].targets[ti].runs.push(run);
            }
        }
    }
    Ok(results)
}

/// The order of the targets (indexes into [`Target::ALL`]) in 1-based round `round`
/// ([`load::rotation`]).
pub fn round_order(round: usize) -> [usize; 3] {
    load::rotation(round)
}

#[derive(Debug, Clone, Copy)]
struct Pids {
    worker: u32,
    router: u32,
    nginx: u32,
    etcd: u32,
}

/// One load run ([`LoadPlan::window`]), with CPU read at the window's edges.
async fn load_once(
    options: &Options,
    spec: Arc<RequestSpec>,
    target: Target,
    pids: &Pids,
) -> anyhow::Result<Run> {
    let proxy = match target {
        Target::Direct => None,
        Target::Nginx => Some(pids.nginx),
        Target::Router => Some(pids.router),
    };
    let (result, before, after) = options
        .load
        .window(spec, || CpuSample::take(pids, proxy))
        .await?;
    Ok(Run {
        load: result.into(),
        cpu: after.minus(&before),
        router_threads: None,
    })
}

/// The router's serving threads taking connections now, from its `/metrics`.
async fn serving_threads(metrics: SocketAddr) -> anyhow::Result<f64> {
    let text = shardline_testkit::http_client(Duration::from_secs(5))?
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let name = shardline_shared::metrics::ROUTER_SERVING_THREADS_ACTIVE;
    ensure!(text.contains(name), "no {name} in the router's metrics");
    Ok(shardline_testkit::metric_sum(&text, name, None))
}

/// Cumulative CPU seconds at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuSample(Cpu);

impl CpuSample {
    fn take(pids: &Pids, proxy: Option<u32>) -> Self {
        Self(Cpu {
            worker: process_cpu(pids.worker),
            proxy: proxy.map_or(0.0, tree_cpu),
            client: process_cpu(std::process::id()),
            machine: machine_busy(),
            etcd: process_cpu(pids.etcd),
        })
    }

    fn minus(&self, earlier: &Self) -> Cpu {
        let (a, b) = (self.0, earlier.0);
        Cpu {
            worker: a.worker - b.worker,
            proxy: a.proxy - b.proxy,
            client: a.client - b.client,
            machine: a.machine - b.machine,
            etcd: a.etcd - b.etcd,
        }
    }
}

fn nginx_binary() -> anyhow::Result<PathBuf> {
    program_from_env(NGINX_BIN_ENV)?
        .or_else(|| on_path("nginx"))
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .with_context(|| {
            format!(
                "nginx not found: install it (scripts/ensure-deps.sh nginx, or apt-get install nginx) or set {NGINX_BIN_ENV}"
            )
        })
}

fn nginx_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .and_then(|s| s.strip_prefix("nginx version: ").map(str::to_owned))
        .unwrap_or_else(|| "nginx".to_owned())
}

/// A deterministic input row in [-1, 1).
fn input_row(dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((i * 37 % 64) as f32 / 32.0) - 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_runs_each_target_once_and_each_leads_in_turn() {
        let mut leads = std::collections::BTreeSet::new();
        for round in 1..=6 {
            let mut order = round_order(round);
            leads.insert(order[0]);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2], "round {round}");
        }
        assert_eq!(leads.len(), Target::ALL.len());
        assert_eq!(round_order(1), [0, 1, 2]);
    }

    fn run(throughput: f64, p99_ms: u64) -> Run {
        Run {
            load: Measured::fixture(throughput, Duration::from_millis(p99_ms)),
            cpu: Cpu::default(),
            router_threads: None,
        }
    }

    #[test]
    fn ratios_pair_each_round_with_its_own_direct_run() {
        // The machine halves its speed in round 2: per-round ratios do not notice, a
        // ratio of medians over rounds would.
        let target = |target, runs| TargetResult { target, runs };
        let m = ModelResult {
            name: "m".into(),
            dims: vec![1],
            targets: vec![
                target(
                    Target::Direct,
                    vec![run(1000.0, 10), run(500.0, 20), run(1000.0, 10)],
                ),
                target(
                    Target::Nginx,
                    vec![run(800.0, 12), run(400.0, 24), run(820.0, 12)],
                ),
                target(
                    Target::Router,
                    vec![run(850.0, 11), run(420.0, 22), run(790.0, 11)],
                ),
            ],
        };
        assert_eq!(
            m.round_throughput_ratios(Target::Router),
            vec![0.85, 0.84, 0.79]
        );
        assert_eq!(m.throughput_ratio(Target::Router), 0.84);
        assert_eq!(m.throughput_ratio(Target::Nginx), 0.8);
        assert_eq!(m.router_ahead_rounds(), 2);
        assert!((m.p99_ratio(Target::Router) - 1.1).abs() < 1e-9);
        assert!(m.met());
    }

    #[test]
    fn nginx_workers_parse() {
        assert_eq!("auto".parse::<NginxWorkers>(), Ok(NginxWorkers::Auto));
        assert_eq!("2".parse::<NginxWorkers>(), Ok(NginxWorkers::Count(2)));
        assert!("0".parse::<NginxWorkers>().is_err());
        assert!("x".parse::<NginxWorkers>().is_err());
    }

    #[test]
    fn nginx_conf_forwards_with_keepalive_and_token() {
        let conf = nginx_conf(Path::new("/tmp/x"), 8080, 9100, NginxWorkers::Count(1));
        for needle in [
            "worker_processes 1;",
            "pid /tmp/x/nginx.pid;",
            "server 127.0.0.1:9100;",
            "keepalive 64;",
            "listen 127.0.0.1:8080;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            &format!("proxy_set_header x-shardline-token {TOKEN};"),
            "access_log off;",
        ] {
            assert!(conf.contains(needle), "missing {needle}");
        }
        assert!(
            nginx_conf(Path::new("/t"), 1, 2, NginxWorkers::Auto)
                .contains("worker_processes auto;")
        );
    }
}
