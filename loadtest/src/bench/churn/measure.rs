//! One run of `bench-churn` on a started fleet: publishes a model per tenant, primes the
//! models that fit, then loads the warm and the churn phase, sampling the worker's `VmRSS`
//! on a thread ([`RssSampler`]) and reading its counters ([`WorkerCounters`](super::WorkerCounters)) around each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use shardline_shared::metrics::WORKER_CAPACITY_BYTES;
use shardline_testkit::metric_sum;

use super::report::{Phase, Report, WorkerCounters};
use super::{INPUT_DIM, MODEL, Options, SAMPLE_EVERY};
use crate::fleet::{self, FleetState};
use crate::loadgen::keys::TenantKey;
use crate::loadgen::{self, Mix, Mode};
use crate::models::MlpArtifact;
use crate::procfs;

pub(super) async fn measure(
    options: &Options,
    fleet: &FleetState,
    first: MlpArtifact,
    budget: u64,
    header: String,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Report> {
    let (dims, model_bytes) = (first.dims.clone(), first.resident_bytes());
    let mut first = Some(first);
    let tenants = options.fit * options.factor;
    let staging = options.run_dir.join("staging");
    let mut keys = Vec::new();
    for i in 0..tenants {
        progress(&format!(
            "publishing {} MB models: {}/{tenants}",
            options.size_mb,
            i + 1
        ));
        let tenant = format!("churn-{i:03}");
        let artifact = first
            .take()
            .unwrap_or_else(|| MlpArtifact::random(&dims, options.seed + i as u64));
        artifact.write_dir(&staging)?;
        let key = fleet::create_tenant(fleet, &tenant, Some(1))?;
        fleet::publish(fleet, &tenant, MODEL, "1", &staging)?;
        keys.push(TenantKey {
            tenant,
            key,
            models: vec![MODEL.to_owned()],
        });
    }
    let _ = std::fs::remove_dir_all(&staging);

    let worker = fleet.workers.first().context("no worker")?;
    let pid = worker.pid;
    let metrics_url = worker
        .metrics_url
        .clone()
        .context("no worker metrics URL")?;
    let router = fleet.routers.first().context("no router")?.url.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let metrics = || async {
        let text = client.get(&metrics_url).send().await?.text().await?;
        anyhow::Ok(text)
    };
    let capacity = metric_sum(&metrics().await?, WORKER_CAPACITY_BYTES, None);

    let warm_keys = keys[..options.fit].to_vec();
    progress(&format!(
        "priming the {} models that fit, one request each",
        options.fit
    ));
    let body = loadgen::plan::infer_body(
        crate::models::mlp::INPUT_NAME,
        1,
        INPUT_DIM,
        1,
        crate::protocol::Protocol::HttpJson,
    )
    .body;
    for k in &warm_keys {
        let answer = client
            .post(format!("{router}/v2/models/{MODEL}/infer"))
            .bearer_auth(&k.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = answer.status();
        ensure!(
            status.is_success(),
            "priming {} answered {status}: {}",
            k.tenant,
            answer.text().await.unwrap_or_default()
        );
    }

    let mut phase = async |name: &'static str, keys: Vec<TenantKey>, duration: Duration| {
        progress(&format!(
            "{name}: {} s, closed loop on {} connections, uniform over {} tenants",
            duration.as_secs_f64(),
            options.concurrency,
            keys.len()
        ));
        let tenants = keys.len();
        let mut load = loadgen::Options::new(
            router.clone(),
            keys,
            Mode::Closed {
                concurrency: options.concurrency,
            },
        );
        load.mix = Mix::Uniform;
        load.duration = duration;
        load.seed = options.seed;
        let before = WorkerCounters::from_metrics(&metrics().await?);
        let sampler = RssSampler::start(pid);
        let report = loadgen::run(&load).await?;
        let (peak_rss, samples) = sampler.stop();
        let after = WorkerCounters::from_metrics(&metrics().await?);
        anyhow::Ok(Phase {
            name,
            tenants,
            load: report,
            worker: after.minus(&before),
            peak_rss,
            samples,
        })
    };
    let warm = phase("warm", warm_keys, options.warm).await?;
    let churn = phase("churn", keys, options.churn).await?;
    let hwm = read_status(pid, "VmHWM").context("reading the worker's VmHWM")?;
    Ok(Report {
        options: options.clone(),
        header,
        model_bytes,
        dims,
        budget,
        capacity,
        warm,
        churn,
        hwm,
    })
}

/// `VmRSS` or `VmHWM` of `pid` from `/proc/<pid>/status`, in bytes.
fn read_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    procfs::field_kib(&text, field).map(|kib| kib * 1024)
}

/// Samples one process's `VmRSS` on a thread of its own until stopped.
pub(super) struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub(super) fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0;
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = read_status(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                    samples += 1;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Self { stop, peak, thread }
    }

    /// Peak `VmRSS` and the number of samples.
    pub(super) fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or(0);
        (self.peak.load(Ordering::Relaxed), samples)
    }
}
