//! `bench-scale`'s last phase: placement quality on the live fleet, kept by the real
//! placement controller.
//!
//! 1. The simulated workers' resident churn stops (their leases are still kept alive), so
//!    that from here on a simulated worker's resident key is written only by a prefetch;
//!    the real worker `w-0` is cordoned (it publishes its resident keys a moment after
//!    answering a load, which would make the audit racy) and leaves the pool.
//! 2. Every simulated worker gets its own loopback listener ([`responder`]) and its
//!    record is rewritten with that address, so that the controller's prefetches reach
//!    the simulated worker they name.
//! 3. The [`audit`] lists workers, resident keys and assignments and follows every change
//!    from then on.
//! 4. A router without `--no-controller` (`r-c`, `--max-balance-moves-per-minute` from
//!    `--balance-moves-per-minute`) is started and becomes the controller.
//! 5. The churn: `--new-tenants` tenants created with one model each as `shardctl` does
//!    (tenant record, then a published manifest made live; no assignment), `--joins`
//!    simulated workers join (leased records, keep-alives), `--losses` existing ones lose
//!    their lease (revoked).
//! 6. Wait until the controller is quiet (no assignment write or prefetch for
//!    [`QUIET`]) with nothing unfinished (every new model assigned, no member on a lost
//!    worker, no `previous` left), at most `--quality-timeout`.
//! 7. The stored assignments are measured ([`figures`]) against the pool of live active
//!    workers, and the audit's counts of moves and cold moves are read.

mod audit;
mod figures;
mod report;
mod responder;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use shardline_control::ControlPlane;
use shardline_control::store::Op;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId, WorkerId};
use shardline_shared::keys::{Key, Section};
use shardline_shared::metrics as names;
use shardline_shared::records::{Assignment, TenantLimits};
use shardline_shared::snapshot::Snapshot;
use shardline_testkit::fleet::Spec;
use shardline_testkit::metric_sum;
use tokio::task::JoinSet;

use super::Options;
use super::populate::{Heartbeats, MODEL, SIM_TTL, Sim, World, sim_id, sim_record, write_all};
use crate::fleet::FleetState;
pub use report::{ControllerView, Quality};
use responder::Responders;

/// The controller counts as quiet after this long without a write or a prefetch: longer
/// than its pacing window (a sixth of a minute) and its grace for `previous` (10 s).
const QUIET: Duration = Duration::from_secs(20);
/// Longest wait for the new router to lead, and for the audit to catch up.
const SETTLE: Duration = Duration::from_secs(30);
/// Tenant creations in flight.
const IN_FLIGHT: usize = 8;

/// What the phase needs from the run so far.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub options: &'a Options,
    pub fleet: &'a FleetState,
    pub cp: &'a ControlPlane,
    pub world: &'a World,
    pub http: &'a reqwest::Client,
}

/// Runs the phase; `heartbeats` (the simulated workers' keep-alives and resident churn so
/// far) is replaced by keep-alives only.
pub async fn run(
    inputs: Inputs<'_>,
    heartbeats: Heartbeats,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Quality> {
    let Inputs {
        options: o,
        fleet,
        cp,
        world,
        http,
    } = inputs;
    let n = world.sims.len();
    let step = n / o.losses.max(1);
    // One loss in each of `losses` equal runs of the simulated workers.
    let loses = |i: usize| o.losses > 0 && i % step == step / 2 && i / step < o.losses;
    let (mut lost, mut stay) = (Vec::new(), Vec::new());
    for (i, sim) in world.sims.iter().enumerate() {
        if loses(i) { &mut lost } else { &mut stay }.push(sim.clone());
    }
    drop(heartbeats);
    let kept = Heartbeats::start(cp, &stay, 0.0);
    let doomed = Heartbeats::start(cp, &lost, 0.0);

    progress("quality: cordoning w-0, giving every simulated worker its own address");
    cordon(fleet, &fleet.workers[0].name)?;
    let mut responders = Responders::default();
    let mut records = Vec::with_capacity(n);
    for sim in &world.sims {
        let address = responders
            .add(cp, &fleet.internal_token, &sim.id, sim.lease)
            .await?;
        records.push(sim_record(cp, &sim.id, &address, sim.lease)?);
    }
    write_all(cp.store(), records.chunks(100).map(<[Op]>::to_vec))
        .await
        .context("rewriting the simulated workers' records (a lease lost earlier?)")?;

    progress("quality: listing the starting point for the move audit");
    let audit = Arc::new(Mutex::new(audit::baseline(cp).await?));
    let follower = audit::follow(cp, audit.clone());
    let (pool, m) = pool(cp).await?;
    let before = {
        let a = audit.lock().unwrap_or_else(PoisonError::into_inner);
        figures::measure(&pool, a.assignments(), m)
    };

    progress(&format!(
        "quality: starting a router with the controller, --max-balance-moves-per-minute {}",
        o.balance_moves_per_minute
    ));
    let rc = Spec::router("r-c", &fleet.etcd.url)
        .set("--internal-token", &fleet.internal_token)
        .set(
            "--max-balance-moves-per-minute",
            o.balance_moves_per_minute.to_string(),
        )
        .spawn(Some(fleet.bin_dir.join("router")))
        .await?;
    let scrape = |name: &'static str, label: Option<(&'static str, &'static str)>| {
        let url = rc.metrics_url.clone();
        async move {
            let text = http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            anyhow::Ok(metric_sum(&text, name, label))
        }
    };
    let led = Instant::now();
    while scrape(names::PLACEMENT_LEADER, None).await? < 1.0 {
        ensure!(led.elapsed() < SETTLE, "r-c did not become the controller");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    progress(&format!(
        "quality: creating {} tenants, {} workers joining, {} losing their lease",
        o.new_tenants, o.joins, o.losses
    ));
    let new_models = create_tenants(cp, world, o.new_tenants).await?;
    let mut joined = Vec::with_capacity(o.joins);
    let mut records = Vec::with_capacity(o.joins);
    for j in 0..o.joins {
        let id = sim_id(n + j)?;
        let lease = cp.store().grant_lease(SIM_TTL).await?;
        let address = responders
            .add(cp, &fleet.internal_token, &id, lease)
            .await?;
        records.push(sim_record(cp, &id, &address, lease)?);
        joined.push(Sim {
            id,
            lease,
            models: vec![],
        });
    }
    write_all(cp.store(), records.chunks(100).map(<[Op]>::to_vec)).await?;
    let joined = Heartbeats::start(cp, &joined, 0.0);
    drop(doomed);
    for sim in &lost {
        cp.store().revoke_lease(sim.lease).await?;
    }

    progress("quality: waiting for the controller to settle");
    let activity = || async {
        anyhow::Ok(
            scrape(names::PLACEMENT_WRITES_TOTAL, None).await?
                + scrape(names::PLACEMENT_PREFETCH_TOTAL, None).await?,
        )
    };
    let mut last = (activity().await?, Instant::now());
    let mut shown = Instant::now();
    let quiet = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if follower.is_finished() {
            return Err(follower
                .await?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the audit stopped")));
        }
        let now = activity().await?;
        if now != last.0 {
            last = (now, Instant::now());
        }
        let (unfinished, moves) = {
            let a = audit.lock().unwrap_or_else(PoisonError::into_inner);
            (a.unfinished(&new_models), a.counts)
        };
        if unfinished.is_done() && last.1.elapsed() >= QUIET {
            break true;
        }
        if started.elapsed() >= o.quality_timeout {
            break false;
        }
        if shown.elapsed() >= Duration::from_secs(15) {
            shown = Instant::now();
            progress(&format!(
                "quality: {:.0} s, {} moves ({} cold), controller sees max/avg {:.3} min/avg {:.3}, unfinished {unfinished:?}",
                started.elapsed().as_secs_f64(),
                moves.moves(),
                moves.cold,
                scrape(names::PLACEMENT_LOAD_MAX_RATIO, None).await?,
                scrape(names::PLACEMENT_LOAD_MIN_RATIO, None).await?,
            ));
        }
    };
    let converged_secs = last.1.saturating_duration_since(started).as_secs_f64();

    progress("quality: measuring the stored assignments");
    let stored = assignments(cp).await?;
    let newest = stored.values().map(|(_, rev)| *rev).max().unwrap_or(0);
    let caught_up = Instant::now();
    while audit
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .revision
        < newest
    {
        ensure!(caught_up.elapsed() < SETTLE, "the move audit fell behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored: BTreeMap<ModelKey, Assignment> =
        stored.into_iter().map(|(k, (a, _))| (k, a)).collect();
    let (pool, m) = self::pool(cp).await?;
    let after = figures::measure(&pool, &stored, m);
    let controller = ControllerView {
        moves: scrape(names::PLACEMENT_MOVES_TOTAL, None).await?,
        balance_moves: scrape(names::PLACEMENT_BALANCE_MOVES_TOTAL, None).await?,
        prefetch_ok: scrape(names::PLACEMENT_PREFETCH_TOTAL, Some(("result", "ok"))).await?,
        prefetch_failed: scrape(names::PLACEMENT_PREFETCH_TOTAL, Some(("result", "failed")))
            .await?,
        conflicts: scrape(names::PLACEMENT_WRITES_TOTAL, Some(("kind", "conflict"))).await?,
        violations: scrape(names::PLACEMENT_VIOLATIONS, None).await?,
        load_max_ratio: scrape(names::PLACEMENT_LOAD_MAX_RATIO, None).await?,
        load_min_ratio: scrape(names::PLACEMENT_LOAD_MIN_RATIO, None).await?,
    };
    follower.abort();
    let (unfinished, moves, cold_examples) = {
        let a = audit.lock().unwrap_or_else(PoisonError::into_inner);
        (a.unfinished(&new_models), a.counts, a.cold_examples.clone())
    };
    let quality = Quality {
        balance_moves_per_minute: o.balance_moves_per_minute,
        new_tenants: o.new_tenants,
        joins: o.joins,
        losses: o.losses,
        before,
        after,
        converged_secs,
        quiet,
        timeout_secs: o.quality_timeout.as_secs_f64(),
        unfinished,
        moves,
        cold_examples,
        prefetches_answered: responders.answered(),
        keep_alive_failures: kept.counts().failures + joined.counts().failures,
        controller,
    };
    rc.stop().await;
    drop((kept, joined, responders));
    Ok(quality)
}

/// `shardctl cordon WORKER`.
fn cordon(fleet: &FleetState, worker: &str) -> anyhow::Result<()> {
    let out = fleet.shardctl().args(["cordon", worker]).output()?;
    ensure!(
        out.status.success(),
        "shardctl cordon {worker}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `q000042`-style names of the tenants the phase creates.
fn new_tenant(i: usize) -> String {
    format!("q{i:06}")
}

/// Creates `count` tenants with one model each, as `shardctl tenant create` and
/// `shardctl publish` do (the model's manifest a copy of the probe's); returns the models.
async fn create_tenants(
    cp: &ControlPlane,
    world: &World,
    count: usize,
) -> anyhow::Result<Vec<ModelKey>> {
    let mut models = Vec::with_capacity(count);
    let mut running = JoinSet::new();
    for i in 0..count {
        let key = ModelKey::new(TenantId::new(new_tenant(i))?, ModelName::new(MODEL)?);
        models.push(key.clone());
        let mut manifest = world.manifest.clone();
        manifest.tenant = key.tenant.clone();
        manifest.model = key.model.clone();
        manifest.version = VersionId::new("1")?;
        if running.len() >= IN_FLIGHT {
            running.join_next().await.context("a tenant writer")???;
        }
        let cp = cp.clone();
        running.spawn(async move {
            cp.create_tenant(&key.tenant, None, TenantLimits::default())
                .await?;
            cp.publish_version(&manifest, true).await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(models)
}

/// The live workers that may take shards (not cordoned or draining), and m.
async fn pool(cp: &ControlPlane) -> anyhow::Result<(BTreeSet<WorkerId>, u32)> {
    let mut kvs = Vec::new();
    let mut revision = 0;
    for section in [Section::Workers, Section::WorkerAdmin] {
        let listing = cp.store().list(&cp.prefix().section(section)).await?;
        revision = revision.max(listing.revision);
        kvs.extend(listing.kvs);
    }
    kvs.extend(cp.store().get(&cp.key(&Key::Placement)).await?);
    let (snap, _invalid) = Snapshot::from_kvs(
        cp.prefix().clone(),
        revision,
        kvs.iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision)),
    );
    let pool = snap
        .placement_problem()
        .workers
        .into_iter()
        .filter(|w| w.take)
        .map(|w| w.id)
        .collect();
    Ok((pool, snap.placement().max_overlap))
}

/// Every stored assignment with its `mod_revision`.
async fn assignments(cp: &ControlPlane) -> anyhow::Result<BTreeMap<ModelKey, (Assignment, i64)>> {
    let listing = cp
        .store()
        .list(&cp.prefix().section(Section::Assignments))
        .await?;
    let mut out = BTreeMap::new();
    for kv in listing.kvs {
        if let Ok(Some(Key::Assignment(model))) = cp.prefix().parse(&kv.key) {
            out.insert(model, (serde_json::from_slice(&kv.value)?, kv.mod_revision));
        }
    }
    Ok(out)
}
