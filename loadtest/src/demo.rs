//! `loadtest demo` (what `just demo` runs): trains one risk model per sample tenant,
//! starts a local fleet (1 router, 4 workers whose memory budget fits about a third of
//! the models), creates the tenants and publishes their models through `shardctl`, drives
//! Zipf-skewed traffic through the router, and prints what happened — throughput,
//! latency, cold loads, evictions, what each worker holds, each tenant's AUC — and the
//! commands to try next against the fleet, which keeps running until `just demo-down`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::fleet::{self, FleetOptions, FleetState};
use crate::loadgen::keys::TenantKey;
use crate::loadgen::report::Report;
use crate::loadgen::{self, DEFAULT_ZIPF, Mix, Mode};
use crate::models::{TenantProfile, TrainOptions, TrainedModel, train_tenant_model};
use shardline_shared::metrics::{
    WORKER_CAPACITY_BYTES, WORKER_EVICTIONS_TOTAL, WORKER_MODEL_LOADS_TOTAL,
    WORKER_MODELS_RESIDENT, WORKER_RESIDENT_BYTES,
};
use shardline_shared::units::parse_duration;
use shardline_testkit::metric_sum;

/// The model name every demo tenant publishes.
pub const MODEL: &str = "risk";
/// The worker's smallest `--memory-budget`.
const MIN_BUDGET: u64 = 1 << 20;

/// What the demo runs (the flags of `loadtest demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Run directory of the fleet (a fleet already running there is stopped first).
    #[arg(long, default_value = "target/demo")]
    pub run_dir: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[arg(long, default_value_t = 1)]
    pub routers: usize,
    /// Workers in each tenant's shard.
    #[arg(long, default_value_t = 2)]
    pub shard_size: u32,
    /// How long to drive traffic (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop at this many requests per second (default: a closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections of the closed loop.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Zipf exponent of the tenant mix (tenant k gets ∝ 1/k^s of the traffic).
    #[arg(long, default_value_t = DEFAULT_ZIPF)]
    pub zipf: f64,
    /// Publish ~this many MB per model, the trained network inside wide layers (50 is
    /// the real workload's size; 0 publishes the small trained network as is).
    #[arg(long, default_value_t = 1.0)]
    pub size_mb: f64,
    /// Keep models in moto's S3 server instead of a directory.
    #[arg(long)]
    pub s3: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory of the router, worker and shardctl binaries (default: beside this one).
    #[arg(long, default_value_os_t = fleet::default_bin_dir(), hide_default_value = true)]
    pub bin_dir: PathBuf,
}

/// What one worker held after the load.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSummary {
    pub name: String,
    pub resident_models: f64,
    pub resident_bytes: f64,
    pub capacity_bytes: f64,
    pub loads: f64,
    pub evictions_idle: f64,
    pub evictions_memory: f64,
}

/// Everything the demo prints.
#[derive(Debug)]
pub struct DemoSummary {
    pub fleet: FleetState,
    pub report: Report,
    pub models: Vec<(String, f64)>,
    pub model_bytes: u64,
    pub workers: Vec<WorkerSummary>,
    pub keys: Vec<TenantKey>,
    pub sample_row: Vec<f32>,
}

/// Runs the demo; `progress` gets one line per step.
pub async fn run(
    options: &DemoOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<DemoSummary> {
    let profiles = TenantProfile::fleet(options.tenants, options.seed);
    let train = TrainOptions {
        size_mb: (options.size_mb > 0.0).then_some(options.size_mb),
        seed: options.seed,
        ..TrainOptions::default()
    };
    let models_dir = options.run_dir.join("models");
    std::fs::create_dir_all(&models_dir)
        .with_context(|| format!("create {}", models_dir.display()))?;
    let mut trained: Vec<(TenantProfile, TrainedModel)> = Vec::new();
    let started = Instant::now();
    for (i, profile) in profiles.into_iter().enumerate() {
        progress(&format!(
            "training risk models: {}/{} ({})",
            i + 1,
            options.tenants,
            profile.name
        ));
        let p = profile.clone();
        let t = train.clone();
        let model = tokio::task::spawn_blocking(move || train_tenant_model(&p, &t)).await??;
        model
            .artifact
            .write_dir(&models_dir.join(&profile.name))
            .with_context(|| format!("write {}'s model", profile.name))?;
        trained.push((profile, model));
    }
    progress(&format!(
        "trained {} models in {:.1} s",
        trained.len(),
        started.elapsed().as_secs_f64()
    ));

    // Each worker fits about a third of all models, plus room for one load in flight
    // (a load briefly holds the fetched file beside the built tensors: one more model).
    let model_bytes = trained
        .iter()
        .map(|(_, m)| m.artifact.resident_bytes())
        .max()
        .unwrap_or(0);
    let fits = options.tenants.div_ceil(3).max(1) as u64;
    let memory_budget = ((fits + 1) * model_bytes + (64 << 10)).max(MIN_BUDGET);

    let fleet = fleet::up(
        &FleetOptions {
            run_dir: options.run_dir.clone(),
            workers: options.workers,
            routers: options.routers,
            memory_budget,
            idle_ttl: "10m".into(),
            s3: options.s3,
            detach: false,
            bin_dir: options.bin_dir.clone(),
            router_args: Vec::new(),
            worker_args: Vec::new(),
            etcd_args: Vec::new(),
        },
        &mut progress,
    )
    .await?;

    let mut keys = Vec::new();
    for (i, (profile, _)) in trained.iter().enumerate() {
        progress(&format!(
            "creating tenants and publishing with shardctl: {}/{}",
            i + 1,
            trained.len()
        ));
        let key = fleet::create_tenant(&fleet, &profile.name, Some(options.shard_size))?;
        fleet::publish(
            &fleet,
            &profile.name,
            MODEL,
            "1",
            &models_dir.join(&profile.name),
        )?;
        keys.push(TenantKey {
            tenant: profile.name.clone(),
            key,
            models: vec![MODEL.to_owned()],
        });
    }
    fleet::write_keys(&fleet.run_dir, &keys)?;

    let router = fleet
        .routers
        .first()
        .context("the demo needs a router")?
        .url
        .clone();
    let mode = match options.rate {
        Some(rate) => Mode::Open {
            rate,
            connections: options.concurrency.max(1) * 4,
        },
        None => Mode::Closed {
            concurrency: options.concurrency,
        },
    };
    let mut load = loadgen::Options::new(router, keys.clone(), mode);
    load.mix = Mix::Zipf(options.zipf);
    load.duration = options.duration;
    load.seed = options.seed;
    progress(&format!(
        "scoring for {} s ({mode}, Zipf({}) over {} tenants)",
        options.duration.as_secs_f64(),
        options.zipf,
        keys.len()
    ));
    let mut task = tokio::spawn(async move { loadgen::run(&load).await });
    let load_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let report = loop {
        tokio::select! {
            done = &mut task => break done??,
            _ = tick.tick() => progress(&format!(
                "scoring: {} s of {} s",
                load_started.elapsed().as_secs(),
                options.duration.as_secs()
            )),
        }
    };

    let client = shardline_testkit::http_client(Duration::from_secs(5))?;
    let mut workers = Vec::new();
    for w in &fleet.workers {
        let Some(url) = &w.metrics_url else { continue };
        let text = client.get(url).send().await?.text().await?;
        workers.push(WorkerSummary {
            name: w.name.clone(),
            resident_models: metric_sum(&text, WORKER_MODELS_RESIDENT, None),
            resident_bytes: metric_sum(&text, WORKER_RESIDENT_BYTES, None),
            capacity_bytes: metric_sum(&text, WORKER_CAPACITY_BYTES, None),
            loads: metric_sum(&text, WORKER_MODEL_LOADS_TOTAL, Some(("result", "ok"))),
            evictions_idle: metric_sum(&text, WORKER_EVICTIONS_TOTAL, Some(("reason", "idle"))),
            evictions_memory: metric_sum(&text, WORKER_EVICTIONS_TOTAL, Some(("reason", "memory"))),
        });
    }
    let sample_row = trained
        .first()
        .map(|(p, _)| p.sample_input(1, 99))
        .unwrap_or_default();
    Ok(DemoSummary {
        fleet,
        report,
        models: trained
            .iter()
            .map(|(p, m)| (p.name.clone(), m.auc))
            .collect(),
        model_bytes,
        workers,
        keys,
        sample_row,
    })
}

fn mib(bytes: f64) -> String {
    if bytes >= (1 << 20) as f64 {
        format!("{:.1} MiB", bytes / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

impl DemoSummary {
    /// The summary and the commands to try next.
    pub fn text(&self) -> String {
        let r = &self.report;
        let mut s = String::new();
        let _ = writeln!(s, "\n=== Shardline demo ===\n");
        let _ = writeln!(
            s,
            "{} tenants, one `{MODEL}` model each ({} per model), {} workers, {} router(s)",
            self.models.len(),
            mib(self.model_bytes as f64),
            self.fleet.workers.len(),
            self.fleet.routers.len()
        );
        let _ = writeln!(
            s,
            "traffic: {} requests, {} ok, {} errors; {:.0} req/s",
            r.requests,
            r.ok,
            r.error_count(),
            r.throughput()
        );
        let l = &r.latency;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let _ = writeln!(
            s,
            "latency (ms): p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            ms(l.max)
        );
        let loads: f64 = self.workers.iter().map(|w| w.loads).sum();
        let evictions: f64 = self
            .workers
            .iter()
            .map(|w| w.evictions_idle + w.evictions_memory)
            .sum();
        let _ = writeln!(
            s,
            "cold loads: {loads:.0}   evictions: {evictions:.0} (memory budget {} per worker)\n",
            mib(self.fleet.memory_budget as f64)
        );
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>12} {:>12} {:>7} {:>10}",
            "worker", "models", "resident", "capacity", "loads", "evictions"
        );
        for w in &self.workers {
            let _ = writeln!(
                s,
                "{:<8} {:>8.0} {:>12} {:>12} {:>7.0} {:>10.0}",
                w.name,
                w.resident_models,
                mib(w.resident_bytes),
                mib(w.capacity_bytes),
                w.loads,
                w.evictions_idle + w.evictions_memory
            );
        }
        let _ = writeln!(s, "\ntenant   AUC (held-out)   requests");
        for (tenant, auc) in &self.models {
            let count = r
                .busiest
                .iter()
                .find(|t| &t.tenant == tenant)
                .map_or("-".to_owned(), |t| t.requests.to_string());
            let _ = writeln!(s, "{tenant:<8} {auc:>14.3}   {count:>8}");
        }
        if !r.errors.is_empty() {
            let _ = writeln!(s, "\nerrors by kind: {:?}", r.errors);
        }
        s.push_str(&self.next_steps());
        s
    }

    fn next_steps(&self) -> String {
        let mut s = String::new();
        let router = self.fleet.routers.first().map_or("", |r| r.url.as_str());
        let bin = self.fleet.bin_dir.display();
        let etcd = &self.fleet.etcd.url;
        let run = self.fleet.run_dir.display();
        let data: Vec<String> = self.sample_row.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(s, "\nThe fleet is still running. Try:\n");
        if let Some(k) = self.keys.first() {
            let _ = writeln!(
                s,
                "  # score one login event for tenant {} (keys of all tenants: {run}/keys.json)",
                k.tenant
            );
            let _ = writeln!(
                s,
                "  curl -s {router}/v2/models/{MODEL}/infer -H 'Authorization: Bearer {}' \\\n    -H 'content-type: application/json' \\\n    -d '{{\"inputs\":[{{\"name\":\"features\",\"shape\":[1,{}],\"datatype\":\"FP32\",\"data\":[{}]}}]}}'",
                k.key,
                self.sample_row.len(),
                data.join(",")
            );
        }
        let _ = writeln!(s, "\n  # what the workers hold, and how shards overlap");
        let _ = writeln!(s, "  {bin}/shardctl --etcd {etcd} workers");
        let _ = writeln!(s, "  {bin}/shardctl --etcd {etcd} blast-radius");
        let _ = writeln!(s, "  # move every shard off a worker, warm first");
        let _ = writeln!(s, "  {bin}/shardctl --etcd {etcd} drain w-0");
        let _ = writeln!(s, "  # more load, open loop at 200 req/s");
        let _ = writeln!(
            s,
            "  {bin}/loadtest run --router {router} --keys {run}/keys.json --rate 200 --duration 10s"
        );
        let _ = writeln!(s, "\nStop it with: just demo-down   (logs: {run}/logs)");
        s
    }
}
