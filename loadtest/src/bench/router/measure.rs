//! Starting the targets and measuring them: the servers (worker, router, nginx),
//! one request spec per target and model, the rounds in rotated order, and the CPU time
//! read around each measured window.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;

use super::nginx::nginx_conf;
use super::{Cpu, INPUT_DIM, ModelResult, Options, Run, Target, TargetResult};
use crate::bench::load::{self, RequestSpec};
use crate::bench::stack::{
    self, TENANT, TOKEN, router_spec, start_router_grpc, start_worker, wait_scores,
};
use crate::client::Tls;
use crate::models::MlpArtifact;
use crate::procfs::{machine_busy, process_cpu, tree_cpu};
use crate::protocol::Protocol;
use crate::stats::ms;
use shardline_testkit::fleet::{Node, Spec};
use shardline_testkit::{ManagedProcess, free_port};

/// The servers under test.
#[derive(Debug)]
pub(super) struct Servers {
    worker: Node,
    worker_addr: SocketAddr,
    router: Node,
    router_addr: SocketAddr,
    /// The same router's gRPC listener.
    router_grpc: SocketAddr,
    router_metrics: String,
    /// A second router, serving TLS with `tls`'s certificate.
    router_tls: Node,
    nginx: ManagedProcess,
    nginx_addr: SocketAddr,
    /// nginx's TLS listener (same certificate).
    nginx_tls_addr: SocketAddr,
    /// The client side: trusting that certificate.
    tls: Tls,
}

impl Servers {
    fn addr(&self, t: Target) -> SocketAddr {
        match t {
            Target::Direct => self.worker_addr,
            Target::Nginx => self.nginx_addr,
            Target::Router | Target::RouterBinary => self.router_addr,
            Target::RouterGrpc => self.router_grpc,
            Target::NginxTls => self.nginx_tls_addr,
            Target::RouterTls => self.router_tls.addr,
        }
    }

    pub(super) async fn stop(mut self) {
        // nginx first: its workers outlive a SIGKILLed master, so stop it cleanly.
        let _ = self.nginx.stop().await;
        self.router.stop().await;
        self.router_tls.stop().await;
        self.worker.stop().await;
    }
}

pub(super) async fn start_servers(
    options: &Options,
    etcd: &str,
    store_url: &str,
    worker_bin: &Path,
    router_bin: &Path,
    nginx_bin: &Path,
) -> anyhow::Result<Servers> {
    let ready = |s: reqwest::StatusCode, _: &str| s.is_success();
    let timeout = Duration::from_secs(30);
    let worker = start_worker(worker_bin, etcd, store_url).await?;
    let (router, router_grpc) = start_router_grpc(router_bin, etcd, options.router_threads).await?;
    let (worker_addr, router_addr) = (worker.addr, router.addr);
    let router_metrics = router.metrics_url.clone();

    let nginx_port = free_port();
    let nginx_addr: SocketAddr = format!("127.0.0.1:{nginx_port}").parse()?;
    let nginx_tls_port = free_port();
    let nginx_tls_addr: SocketAddr = format!("127.0.0.1:{nginx_tls_port}").parse()?;
    let nginx = ManagedProcess::new("nginx", nginx_bin)?;
    let dir = nginx.dir().to_owned();
    let (cert, key) = shardline_testkit::certs::self_signed(&dir, "bench", "shardline-bench")?;
    let tls = Tls::trusting(&cert)?;
    let router_tls =
        start_router_tls(router_bin, etcd, options.router_threads, &cert, &key).await?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(
            &dir,
            nginx_port,
            worker_addr.port(),
            options.nginx_workers,
            Some((nginx_tls_port, &cert, &key)),
        ),
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
        router_grpc,
        router_metrics,
        router_tls,
        nginx,
        nginx_addr,
        nginx_tls_addr,
        tls,
    })
}

/// The router again, serving TLS with `cert` and `key`.
async fn start_router_tls(
    bin: &Path,
    etcd: &str,
    threads: Option<usize>,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Node> {
    let mut spec = Spec::router("r-tls", etcd)
        .set("--tls-cert", cert.display().to_string())
        .set("--tls-key", key.display().to_string())
        // Only one router runs the placement controller.
        .args(["--no-controller"]);
    if let Some(t) = threads {
        spec = spec.set("--threads", t.to_string());
    }
    spec.spawn(Some(bin.to_owned())).await
}

/// The request each target gets for `model`: the same features, the same body bytes for
/// the HTTP targets in the run's protocol, different path and auth.
pub(super) fn spec(
    servers: &Servers,
    target: Target,
    model: &str,
    key: &str,
    bodies: &Bodies,
) -> anyhow::Result<RequestSpec> {
    let addr = servers.addr(target);
    let (body, headers) = &bodies.run;
    let plain = |spec: anyhow::Result<RequestSpec>| spec?.with_headers(headers);
    match target {
        Target::RouterBinary => {
            let (body, headers) = &bodies.binary;
            return router_spec(addr, model, key, body.clone())?.with_headers(headers);
        }
        Target::RouterGrpc => return RequestSpec::grpc_infer(addr, model, key, &bodies.grpc),
        _ => {}
    }
    let internal = format!("/v2/models/{TENANT}.{model}/infer");
    let spec = match target {
        Target::Direct => RequestSpec::post_json(
            addr,
            &internal,
            &[("x-shardline-token", TOKEN)],
            body.clone(),
        ),
        Target::Nginx => RequestSpec::post_json(addr, &internal, &[], body.clone()),
        Target::Router | Target::RouterBinary | Target::RouterGrpc => {
            router_spec(addr, model, key, body.clone())
        }
        Target::NginxTls => {
            Ok(RequestSpec::post_json(addr, &internal, &[], body.clone())?.over_tls(&servers.tls))
        }
        Target::RouterTls => {
            Ok(router_spec(addr, model, key, body.clone())?.over_tls(&servers.tls))
        }
    };
    plain(spec)
}

/// The bodies of one run: in the run's protocol (with its headers), with binary tensor
/// data, and the gRPC message — the same features in each.
pub(super) struct Bodies {
    run: (Bytes, Vec<(&'static str, String)>),
    binary: (Bytes, Vec<(&'static str, String)>),
    grpc: Bytes,
}

impl Bodies {
    fn new(protocol: Protocol, batch: usize, data: &[f32]) -> Self {
        let encoded = |p: Protocol| {
            let payload = p.payload("features", batch, data);
            let headers = Protocol::headers(&payload);
            (payload.body, headers)
        };
        Self {
            run: encoded(protocol),
            binary: encoded(Protocol::HttpBinary),
            grpc: Protocol::Grpc.payload("features", batch, data).body,
        }
    }
}

/// Scores as `f32` (JSON answers give them as decimal numbers, binary and gRPC ones as
/// `f32`s: the same value either way when the worker's answers agree).
fn as_f32(scores: &serde_json::Value) -> Vec<f32> {
    scores
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn measure(
    options: &Options,
    servers: &Servers,
    etcd: u32,
    key: &str,
    models: &[(String, MlpArtifact)],
    progress: &impl Fn(&str),
) -> anyhow::Result<Vec<ModelResult>> {
    let data: Vec<f32> = (0..options.batch)
        .flat_map(|r| {
            input_row(INPUT_DIM)
                .into_iter()
                .map(move |x| x * (1.0 - r as f32 / 128.0))
        })
        .collect();
    let bodies = Bodies::new(options.protocol, options.batch, &data);
    let mut specs = Vec::new();
    for (name, _) in models {
        let mut per = Vec::new();
        for t in Target::ALL {
            per.push(Arc::new(spec(servers, t, name, key, &bodies)?));
        }
        specs.push(per);
    }

    progress("checking that every target answers the same scores");
    for ((name, _), per) in models.iter().zip(&specs) {
        let mut first: Option<Vec<f32>> = None;
        for (t, s) in Target::ALL.iter().zip(per) {
            let scores = wait_scores(s, Duration::from_secs(30))
                .await
                .with_context(|| format!("{name} via {}", t.name()))?;
            let scores = as_f32(&scores);
            match &first {
                None => first = Some(scores),
                Some(want) => ensure!(
                    want.iter()
                        .map(|x| x.to_bits())
                        .eq(scores.iter().map(|x| x.to_bits())),
                    "{name}: {} scored {scores:?}, direct {want:?}",
                    t.name()
                ),
            }
        }
    }

    let pids = Pids {
        worker: servers.worker.pid().context("the worker is not running")?,
        router: servers.router.pid().context("the router is not running")?,
        router_tls: servers
            .router_tls
            .pid()
            .context("the TLS router is not running")?,
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
                if matches!(
                    t,
                    Target::Router | Target::RouterTls | Target::RouterBinary | Target::RouterGrpc
                ) {
                    let url = if *t == Target::RouterTls {
                        &servers.router_tls.metrics_url
                    } else {
                        &servers.router_metrics
                    };
                    run.router_threads = Some(
                        serving_threads(url)
                            .await
                            .context("the router's serving threads")?,
                    );
                }
                progress(&format!(
                    "round {round}/{}: {:<7} {:<13} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  other load {:.2} cores",
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
pub fn round_order(round: usize) -> [usize; 7] {
    load::rotation(round)
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pids {
    worker: u32,
    router: u32,
    router_tls: u32,
    nginx: u32,
    etcd: u32,
}

/// One load run ([`LoadPlan::window`]), with CPU read at the window's edges.
pub(super) async fn load_once(
    options: &Options,
    spec: Arc<RequestSpec>,
    target: Target,
    pids: &Pids,
) -> anyhow::Result<Run> {
    let proxy = match target {
        Target::Direct => None,
        Target::Nginx | Target::NginxTls => Some(pids.nginx),
        Target::Router | Target::RouterBinary | Target::RouterGrpc => Some(pids.router),
        Target::RouterTls => Some(pids.router_tls),
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
pub(super) async fn serving_threads(metrics_url: &str) -> anyhow::Result<f64> {
    let http = shardline_testkit::http_client(Duration::from_secs(5))?;
    let name = shardline_shared::metrics::ROUTER_SERVING_THREADS_ACTIVE;
    stack::metric(&http, metrics_url, name).await
}

/// Cumulative CPU seconds at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSample(Cpu);

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

/// A deterministic input row in [-1, 1).
pub(super) fn input_row(dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((i * 37 % 64) as f32 / 32.0) - 1.0)
        .collect()
}
