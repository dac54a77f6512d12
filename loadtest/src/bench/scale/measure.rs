//! The steps of `bench-scale` in order (see the module docs of [`super`]), each reading
//! its figure into the [`Report`].

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use shardline_control::store::{Op, Txn};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::keys::{Key, Prefix, Section};
use shardline_shared::manifest::Manifest;
use shardline_shared::metrics as names;
use shardline_testkit::fleet::Spec;
use shardline_testkit::{ManagedProcess, free_port};

use super::Options;
use super::populate::{Heartbeats, MODEL, populate};
use super::probe;
use super::quality;
use super::report::{Latencies, Report, ShardctlTiming};
use crate::bench::stack;
use crate::fleet::{self, FleetState};
use crate::models::MlpArtifact;
use crate::procfs::{Footprint, process_cpu};
use crate::stats::ms;

const PROBE_DIMS: [usize; 3] = [4, 16, 1];
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of events written while a router is stopped, before the compaction.
const COMPACTION_BURST_BYTES: usize = 32 << 20;

pub async fn measure(
    options: &Options,
    fleet: &FleetState,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Report> {
    let store = EtcdStore::connect(std::slice::from_ref(&fleet.etcd.url)).await?;
    let cp = ControlPlane::new(Arc::new(store), Prefix::default());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let body = probe::body(PROBE_DIMS[0]);

    progress("publishing the probe model");
    let dir = options.run_dir.join("models").join("probe");
    MlpArtifact::random(&PROBE_DIMS, 7).write_dir(&dir)?;
    fleet::create_tenant(fleet, "probe", Some(1))?;
    fleet::publish(fleet, "probe", MODEL, "1", &dir)?;
    let probe_key = ModelKey::new(TenantId::new("probe")?, ModelName::new(MODEL)?);
    let manifest: Manifest = cp
        .read(&Key::ModelVersion(probe_key, VersionId::new("1")?))
        .await?
        .context("the probe manifest")?
        .value;
    let address = fleet.workers[0]
        .url
        .trim_start_matches("http://")
        .to_owned();

    let mut world = populate(
        &cp,
        &manifest,
        &address,
        options.tenants,
        options.workers,
        options.probes.max(10),
        progress,
    )
    .await?;
    let mut report = Report {
        tenants: world.tenants,
        workers: options.workers,
        resident_keys: world.resident_keys,
        populate_secs: world.seconds,
        ..Report::default()
    };
    let heartbeats = Heartbeats::start(&cp, &world.sims, options.resident_changes_per_sec);
    report.etcd_db_bytes = dir_bytes(&options.run_dir.join("etcd"));

    let r0 = &fleet.routers[0];
    progress("waiting for the router that watched the population (r-0) to serve");
    report.watched_router_catch_up_secs =
        first_ok(&http, &r0.url, &world.samples[0].key, &body).await?;

    progress("starting a new router (r-1)");
    let started = Instant::now();
    let r1 = Spec::router("r-1", &fleet.etcd.url)
        .set("--internal-token", &fleet.internal_token)
        .args(["--no-controller".to_owned()])
        .spawn(Some(fleet.bin_dir.join("router")))
        .await?;
    report.new_router_ready_secs = started.elapsed().as_secs_f64();
    first_ok(&http, &r1.url, &world.samples[1].key, &body).await?;
    report.new_router_serves_secs = started.elapsed().as_secs_f64();

    progress("starting a new worker (w-1)");
    let started = Instant::now();
    let w1 = Spec::worker("w-1", &fleet.etcd.url, &fleet.store_url)
        .set("--internal-token", &fleet.internal_token)
        .spawn(Some(fleet.bin_dir.join("worker")))
        .await?;
    report.new_worker_ready_secs = started.elapsed().as_secs_f64();

    for command in ["workers", "tenants", "assignments", "blast-radius"] {
        progress(&format!("timing shardctl {command}"));
        let started = Instant::now();
        let out = fleet
            .shardctl()
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        ensure!(
            out.status.success(),
            "shardctl {command}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        report.shardctl.push(ShardctlTiming {
            command: command.to_owned(),
            secs: started.elapsed().as_secs_f64(),
            lines: out.stdout.iter().filter(|&&b| b == b'\n').count(),
        });
    }

    progress("reading router memory against an empty router");
    let r1_pid = r1.pid().context("r-1's pid")?;
    report.router_rss_kib = Footprint::of(r1_pid).context("r-1 is gone")?.rss_kib;
    report.empty_router_rss_kib = empty_router_rss(fleet).await?;

    progress("measuring key rotation and publish-to-routable at every router");
    let routers = vec![r0.url.clone(), r1.url.clone()];
    let (mut rotations, mut publications) = (Vec::new(), Vec::new());
    for j in 0..options.probes {
        let n = world.samples.len();
        let sample = &mut world.samples[j % n];
        rotations.push(probe::rotation(&cp, &http, &routers, sample, &body).await?);
        let sample = &world.samples[j % n];
        publications.push(
            probe::publish(
                &cp,
                &world,
                &http,
                &routers,
                sample,
                &format!("new{j}"),
                &body,
            )
            .await?,
        );
    }
    report.rotation = Latencies::of(&rotations);
    report.publish = Latencies::of(&publications);

    progress("reading router CPU and etcd writes over a quiet window");
    let revision = |cp: &ControlPlane| {
        let cp = cp.clone();
        async move {
            cp.store()
                .list(&cp.key(&Key::Placement))
                .await
                .map(|l| l.revision)
        }
    };
    let r0_pid = r0.pid;
    let (cpu0, cpu1, rev, hb) = (
        process_cpu(r0_pid),
        process_cpu(r1_pid),
        revision(&cp).await?,
        heartbeats.counts(),
    );
    tokio::time::sleep(options.window).await;
    let secs = options.window.as_secs_f64();
    report.router_cpu_share = [
        (process_cpu(r0_pid) - cpu0) / secs,
        (process_cpu(r1_pid) - cpu1) / secs,
    ];
    report.etcd_revisions_per_sec = (revision(&cp).await? - rev) as f64 / secs;
    let after = heartbeats.counts();
    report.keep_alives_per_sec = (after.keep_alives - hb.keep_alives) as f64 / secs;
    report.resident_writes_per_sec = (after.resident_writes - hb.resident_writes) as f64 / secs;
    report.heartbeat_failures = after.failures;

    progress("compacting while r-0 is stopped, then checking it re-lists");
    let metrics0 = r0.metrics_url.clone().context("r-0's metrics")?;
    let resyncs = stack::metric(&http, &metrics0, names::CONTROL_RESYNCS_TOTAL).await?;
    signal(r0_pid, "STOP")?;
    let stopped = async {
        // Megabytes of events (manifests rewritten as they are), more than the gRPC
        // windows and etcd's watch buffers hold for a reader that does not read, so
        // that etcd drops the stopped router's watcher to catch up later; the
        // compaction then removes the history it would catch up from.
        let manifests = cp
            .store()
            .list(&cp.prefix().section(Section::Models))
            .await?;
        let mut bytes = 0;
        let burst: Vec<Vec<Op>> = manifests
            .kvs
            .into_iter()
            .take_while(|kv| {
                bytes += kv.value.len();
                bytes < COMPACTION_BURST_BYTES
            })
            .map(|kv| Op::put(kv.key, kv.value))
            .collect::<Vec<_>>()
            .chunks(100)
            .map(<[Op]>::to_vec)
            .collect();
        for ops in burst {
            cp.store()
                .txn(ops.into_iter().fold(Txn::new(), Txn::op))
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let compact_at = revision(&cp).await?;
        cp.store().compact(compact_at).await?;
        anyhow::Ok(())
    }
    .await;
    signal(r0_pid, "CONT")?;
    stopped?;
    let sample = &mut world.samples[0];
    report.compaction_rotation_ms =
        ms(probe::rotation(&cp, &http, std::slice::from_ref(&r0.url), sample, &body).await?);
    report.compaction_resyncs =
        stack::metric(&http, &metrics0, names::CONTROL_RESYNCS_TOTAL).await? - resyncs;
    // The quality phase starts from a fleet of simulated workers only (w-0 is cordoned
    // there), with no router but r-0 besides the controller's.
    w1.stop().await;
    r1.stop().await;
    report.heartbeat_failures = heartbeats.counts().failures;
    let inputs = quality::Inputs {
        options,
        fleet,
        cp: &cp,
        world: &world,
        http: &http,
    };
    report.quality = quality::run(inputs, heartbeats, progress).await?;
    report.etcd_db_bytes_end = dir_bytes(&options.run_dir.join("etcd"));
    Ok(report)
}

/// Seconds until `router` answers 200 for the generated model with `key`.
async fn first_ok(
    http: &reqwest::Client,
    router: &str,
    key: &str,
    body: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        let status = probe::score(http, router, MODEL, key, body)
            .await
            .unwrap_or(0);
        if status == 200 {
            return Ok(started.elapsed().as_secs_f64());
        }
        ensure!(
            started.elapsed() < SERVE_TIMEOUT,
            "{router} still answers {status} after {SERVE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// RSS of a router whose prefix holds nothing, once it has listed it.
async fn empty_router_rss(fleet: &FleetState) -> anyhow::Result<u64> {
    let loopback = |p| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let argv = Spec::router("r-empty", &fleet.etcd.url)
        .set("--internal-token", &fleet.internal_token)
        .set("--prefix", "/shardline-empty")
        .args(["--no-controller".to_owned()])
        .command_line(loopback(free_port()), loopback(free_port()));
    let mut process = ManagedProcess::new("r-empty", fleet.bin_dir.join("router"))?
        .args(argv.into_iter().skip(1));
    process.spawn().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = process.pid().context("r-empty's pid")?;
    let rss = Footprint::of(pid).context("r-empty exited")?.rss_kib;
    process.stop().await?;
    Ok(rss)
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid}");
    Ok(())
}

/// Bytes of the files under `dir` (etcd's data directory).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
