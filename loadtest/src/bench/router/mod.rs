//! `loadtest bench-router`: the cost of the router's hop, as throughput and latency
//! ratios against the same worker reached directly, next to nginx as a plain reverse
//! proxy in front of the same worker, all measured in one run; and the same over TLS (a
//! second router with `--tls-cert`, a TLS `server` in the same nginx, one self-signed
//! certificate made with `openssl`).
//!
//! It starts etcd, a `file://` model store, ONE release `worker` process, ONE release
//! `router` process (both found next to this executable) and nginx (master + `auto` or
//! N worker processes, a generated configuration in a scratch directory, keep-alive to
//! the worker, adding the internal token). It creates tenant `bench` (shard size 1, no
//! limits), publishes `mlp` (64 → 256 → 256 → 1) and `trivial` (64 → 1), and checks that
//! the three targets answer the same scores. Then, for `--rounds` rounds, for each model,
//! it loads each target in turn (direct, nginx, router, rotated) with the same closed-loop
//! client ([`load`](super::load): `--concurrency` keep-alive connections, `--warmup`
//! then a measured `--duration`) and the same request bytes (`--batch` rows of 64
//! floats, one by default, as JSON or — `--protocol http-binary` — as binary tensor data
//! with the scores asked back in binary):
//!
//! - direct: `POST worker/v2/models/bench.<model>/infer` with `x-shardline-token`;
//! - nginx: `POST nginx/v2/models/bench.<model>/infer` (nginx adds the token);
//! - router: `POST router/v2/models/<model>/infer` with `Authorization: Bearer <key>`;
//! - router-binary: the same with binary tensor data both ways, whatever `--protocol`;
//! - router-grpc: the router's gRPC listener (`--grpc-listen`), `ModelInfer` with the
//!   same features as raw FP32 (`raw_input_contents`), 8 concurrent calls per HTTP/2
//!   connection ([`GRPC_STREAMS_PER_CONNECTION`](crate::client::GRPC_STREAMS_PER_CONNECTION)).
//!
//! Each round rotates the order of the targets. Each figure is the median of its rounds;
//! each ratio is the median of the rounds' ratios, each against the direct run of the
//! same round (paired: the machine's speed drifts by ±10 % over minutes on a shared
//! host, more than the gap being measured). The targets: router ÷ direct throughput at
//! least nginx ÷ direct, and gRPC through the router at least 0.8 × binary HTTP through
//! the router (paired the same way), for both models. A missed target is reported, not an
//! error.
//! During each measured window it also reads the CPU time of the worker, of the proxy
//! (router, or nginx's master and workers), of this client process, and of the whole
//! machine (`/proc`), so that CPU per request and other load on the machine show.

mod measure;
mod nginx;
mod report;

use std::fmt::Write as _;

use anyhow::{Context as _, ensure};

use super::docs::{Section, machine, today};
use super::load::LoadPlan;
use super::stack::{Control, sibling};
use crate::models::MlpArtifact;
use crate::protocol::Protocol;

pub use measure::round_order;
use measure::{measure, start_servers};
pub use nginx::nginx_conf;
use nginx::{nginx_binary, nginx_version};
pub use report::{Cpu, ModelResult, Report, Run, TargetResult};

const INPUT_DIM: usize = 64;
/// Environment variable naming the nginx binary to run.
pub const NGINX_BIN_ENV: &str = "SHARDLINE_NGINX_BIN";
/// The models: name and widths.
pub const MODELS: [(&str, &[usize]); 2] = [("mlp", &[64, 256, 256, 1]), ("trivial", &[64, 1])];
/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed("router", "## Router hop (`just bench-router`)");

/// gRPC through the router ÷ binary HTTP through the router, in req/s: the target.
pub const GRPC_TARGET: f64 = 0.8;

/// The ways to the worker: direct, and through nginx or the router over plain HTTP or
/// TLS (the same self-signed certificate for both), and through the router with binary
/// tensor data and over gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    Nginx,
    Router,
    NginxTls,
    RouterTls,
    RouterBinary,
    RouterGrpc,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Direct,
        Target::Nginx,
        Target::Router,
        Target::NginxTls,
        Target::RouterTls,
        Target::RouterBinary,
        Target::RouterGrpc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::Router => "router",
            Target::NginxTls => "nginx-tls",
            Target::RouterTls => "router-tls",
            Target::RouterBinary => "router-binary",
            Target::RouterGrpc => "router-grpc",
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
    /// Request encoding of the HTTP targets: `http-json` or `http-binary` (binary tensor
    /// data both ways). gRPC through the router (`router-grpc`) runs in every run.
    #[arg(long, value_enum, default_value_t = Protocol::HttpJson)]
    pub protocol: Protocol,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load: LoadPlan::default(),
            router_threads: None,
            nginx_workers: NginxWorkers::Auto,
            models: Vec::new(),
            protocol: Protocol::HttpJson,
            batch: 1,
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
        if self.protocol != Protocol::HttpJson {
            let _ = write!(s, " --protocol {}", self.protocol.name());
        }
        if self.batch != 1 {
            let _ = write!(s, " --batch {}", self.batch);
        }
        s
    }

    /// The section of `docs/benchmarks.md` these options write: [`DOCS`] for JSON, one
    /// row per request; a section of their own for another protocol or batch, so that the
    /// runs stand side by side.
    pub fn docs_section(&self) -> Section {
        if self.protocol == Protocol::HttpJson && self.batch == 1 {
            return DOCS;
        }
        let mut name = "router".to_owned();
        let mut what = Vec::new();
        if self.protocol != Protocol::HttpJson {
            name += "-binary";
            what.push("binary tensor data".to_owned());
        }
        if self.batch != 1 {
            let _ = write!(name, "-batch{}", self.batch);
            what.push(format!("{} rows per request", self.batch));
        }
        Section {
            heading: format!("## Router hop, {} (`{}`)", what.join(", "), self.command()).into(),
            name: name.into(),
        }
    }
}

/// Runs the benchmark. `progress` receives one line per phase and per measured run.
pub async fn run(options: &Options, progress: impl Fn(&str)) -> anyhow::Result<Report> {
    options.load.validate()?;
    ensure!(options.batch > 0, "--batch must be at least 1");
    ensure!(
        options.protocol != Protocol::Grpc,
        "--protocol grpc: the direct and nginx targets speak HTTP; gRPC through the router is measured in every run (router-grpc)"
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    use crate::bench::load::Measured;
    use crate::bench::stack::TOKEN;

    #[test]
    fn every_round_runs_each_target_once_and_each_leads_in_turn() {
        let mut leads = std::collections::BTreeSet::new();
        for round in 1..=6 {
            let mut order = round_order(round);
            // Six rounds: six of the seven targets lead once.
            leads.insert(order[0]);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3, 4, 5, 6], "round {round}");
        }
        assert_eq!(leads.len(), Target::ALL.len() - 1);
        assert_eq!(round_order(1), [0, 1, 2, 3, 4, 5, 6]);
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
                target(
                    Target::RouterBinary,
                    vec![run(900.0, 10), run(450.0, 20), run(1000.0, 10)],
                ),
                target(
                    Target::RouterGrpc,
                    vec![run(810.0, 12), run(450.0, 20), run(700.0, 13)],
                ),
            ],
        };
        // gRPC is paired with binary HTTP of the same round, not with direct.
        assert_eq!(m.round_grpc_ratios(), vec![0.9, 1.0, 0.7]);
        assert_eq!(m.grpc_ratio(), 0.9);
        assert!(m.grpc_met());
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
    fn a_grpc_miss_is_reported_with_its_ratio() {
        let target = |target, throughput| TargetResult {
            target,
            runs: vec![run(throughput, 10)],
        };
        let m = ModelResult {
            name: "mlp".into(),
            dims: vec![64, 1],
            targets: Target::ALL
                .iter()
                .map(|&t| match t {
                    Target::RouterGrpc => target(t, 700.0),
                    _ => target(t, 1000.0),
                })
                .collect(),
        };
        assert!(m.met());
        assert!(!m.grpc_met());
        let report = Report {
            options: Options::default(),
            machine: "test".into(),
            date: "today".into(),
            nginx_version: "nginx".into(),
            models: vec![m],
        };
        assert_eq!(
            report.misses(),
            ["target missed: mlp: router-grpc ÷ router-binary 0.700 < 0.8"]
        );
        let table = report.table();
        assert!(
            table.contains("| mlp | 1000 | 700 | 0.700 |"),
            "no gRPC row in:\n{table}"
        );
        assert!(table.contains("| missed |"));
        assert_eq!(report.json()["models"][0]["grpc_met"], false);
        assert!(
            report
                .rounds_table()
                .contains("| mlp | router-grpc ÷ router-binary | 0.700 |")
        );
    }

    #[test]
    fn grpc_is_not_a_protocol_of_the_http_targets() {
        let options = Options {
            protocol: Protocol::Grpc,
            ..Options::default()
        };
        let err = futures::executor::block_on(super::run(&options, |_| {})).unwrap_err();
        assert!(err.to_string().contains("router-grpc"), "{err}");
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
        let conf = nginx_conf(
            Path::new("/tmp/x"),
            8080,
            9100,
            NginxWorkers::Count(1),
            None,
        );
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
            nginx_conf(Path::new("/t"), 1, 2, NginxWorkers::Auto, None)
                .contains("worker_processes auto;")
        );
        assert!(!conf.contains("ssl"));
        let tls = nginx_conf(
            Path::new("/t"),
            1,
            2,
            NginxWorkers::Auto,
            Some((8443, Path::new("/t/c.crt"), Path::new("/t/c.key"))),
        );
        for needle in [
            "listen 127.0.0.1:8443 ssl;",
            "ssl_certificate /t/c.crt;",
            "ssl_certificate_key /t/c.key;",
            "listen 127.0.0.1:1;",
        ] {
            assert!(tls.contains(needle), "missing {needle}");
        }
        assert_eq!(
            tls.matches("proxy_pass http://shardline_worker;").count(),
            2
        );
    }
}
