//! Writes the scale benchmark's world into etcd the way the real writers lay it out:
//! tenants with a key digest each, one model per tenant (a copy of the probe tenant's
//! manifest, so every model is servable), live pointers, assignments from `place()`, and
//! simulated workers: leased records with one leased `resident/…` key per model held.
//! Then [`Heartbeats`] keeps the simulated leases alive and changes residents at a set
//! rate, as real workers loading and evicting would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shardline_control::ControlPlane;
use shardline_control::store::{KvStore, Op, Txn, TxnOutcome};
use shardline_shared::auth::ApiKey;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId, WorkerId};
use shardline_shared::keys::Key;
use shardline_shared::manifest::Manifest;
use shardline_shared::placement::{Params, Problem, ShardSpec, WorkerSlot, place};
use shardline_shared::records::{
    Assignment, LiveVersion, PlacementConfig, ResidentRecord, TenantLimits, TenantRecord,
    WorkerRecord,
};
use tokio::task::JoinSet;

/// Tenants written per transaction (4 keys each: etcd takes at most 128 operations).
const TENANTS_PER_TXN: usize = 30;
/// Resident keys written per transaction.
const RESIDENTS_PER_TXN: usize = 100;
/// Transactions in flight while populating.
const IN_FLIGHT: usize = 8;
/// Lease of a simulated worker, as a real worker's default.
pub const SIM_TTL: Duration = Duration::from_secs(10);
/// The model every generated tenant has.
pub const MODEL: &str = "risk";

/// A generated tenant whose plain API key was kept, for probes.
#[derive(Debug, Clone)]
pub struct Sample {
    pub tenant: TenantId,
    pub key: String,
}

/// What was written.
#[derive(Debug)]
pub struct World {
    pub samples: Vec<Sample>,
    /// Simulated workers with their lease and the models they hold.
    pub sims: Vec<Sim>,
    pub tenants: usize,
    pub resident_keys: usize,
    pub seconds: f64,
    /// The probe manifest every generated model copies.
    pub manifest: Manifest,
}

/// One simulated worker.
#[derive(Debug, Clone)]
pub struct Sim {
    pub id: WorkerId,
    pub lease: i64,
    pub models: Vec<ModelKey>,
}

/// `t000042`-style tenant names.
pub fn tenant_name(i: usize) -> String {
    format!("t{i:06}")
}

/// The id of simulated worker `i`: `s-0042`.
pub fn sim_id(i: usize) -> anyhow::Result<WorkerId> {
    Ok(WorkerId::new(format!("s-{i:04}"))?)
}

/// The write of a simulated worker's leased record, reachable at `address`.
pub fn sim_record(
    cp: &ControlPlane,
    id: &WorkerId,
    address: &str,
    lease: i64,
) -> anyhow::Result<Op> {
    let record = WorkerRecord {
        address: address.to_owned(),
        capacity_bytes: 8 << 30,
        used_bytes: 0,
        resident: vec![],
        build_version: "simulated".into(),
        started_at: shardline_control::ops::unix_now(),
    };
    Ok(Op::Put {
        key: cp.key(&Key::Worker(id.clone())),
        value: serde_json::to_vec(&record)?,
        lease,
    })
}

/// Writes `tenants` tenants and `workers` simulated workers whose address is `address`
/// (a real worker, so that every member a router picks answers). Keeps the key of every
/// `tenants / samples`-th tenant.
pub async fn populate(
    cp: &ControlPlane,
    manifest: &Manifest,
    address: &str,
    tenants: usize,
    workers: usize,
    samples: usize,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<World> {
    let started = Instant::now();
    let store = cp.store().clone();
    let version = VersionId::new("1")?;
    let now = shardline_control::ops::unix_now();

    progress(&format!("granting {workers} simulated workers' leases"));
    let mut sims = Vec::with_capacity(workers);
    let mut records = Vec::with_capacity(workers);
    for w in 0..workers {
        let id = sim_id(w)?;
        let lease = store.grant_lease(SIM_TTL).await?;
        records.push(sim_record(cp, &id, address, lease)?);
        sims.push(Sim {
            id,
            lease,
            models: vec![],
        });
    }
    write_all(
        &store,
        records.chunks(RESIDENTS_PER_TXN).map(<[Op]>::to_vec),
    )
    .await?;
    // Populating takes longer than a lease lives: keep the leases alive meanwhile.
    let keeper = Heartbeats::start(cp, &sims, 0.0);

    progress(&format!("placing {tenants} models on {workers} workers"));
    let keys: Vec<ModelKey> = (0..tenants)
        .map(|i| {
            Ok(ModelKey::new(
                TenantId::new(tenant_name(i))?,
                ModelName::new(MODEL)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let config = PlacementConfig::default();
    let params = Params::from_config(&config).map_err(anyhow::Error::msg)?;
    let problem = Problem {
        workers: sims
            .iter()
            .map(|s| WorkerSlot {
                id: s.id.clone(),
                keep: true,
                take: true,
            })
            .collect(),
        shards: keys
            .iter()
            .map(|key| ShardSpec {
                key: key.clone(),
                k: config.default_k,
                current: vec![],
            })
            .collect(),
    };
    let plan = place(&problem, &params);
    let index: std::collections::HashMap<&WorkerId, usize> =
        sims.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
    let mut members: Vec<Vec<usize>> = Vec::with_capacity(tenants);
    for key in &keys {
        let shard = plan.shards.get(key).context("place() left a model out")?;
        members.push(shard.iter().map(|w| index[w]).collect());
    }

    progress(&format!(
        "writing {tenants} tenants, manifests, live versions and assignments"
    ));
    let every = (tenants / samples.max(1)).max(1);
    let mut kept = Vec::new();
    let mut txns = Vec::with_capacity(tenants / TENANTS_PER_TXN + 1);
    let mut ops = Vec::with_capacity(TENANTS_PER_TXN * 4);
    for (i, key) in keys.iter().enumerate() {
        let api = ApiKey::generate()?;
        if i % every == 0 {
            kept.push(Sample {
                tenant: key.tenant.clone(),
                key: api.expose().to_owned(),
            });
        }
        let tenant = TenantRecord {
            shard_size: None,
            limits: TenantLimits::default(),
            keys: vec![api.digest(now)],
            created_at: now,
        };
        let mut m = manifest.clone();
        m.tenant = key.tenant.clone();
        m.model = key.model.clone();
        m.version = version.clone();
        let assignment = Assignment {
            workers: members[i].iter().map(|&w| sims[w].id.clone()).collect(),
            epoch: 1,
            previous: vec![],
        };
        let live = LiveVersion {
            version: version.clone(),
            updated_at: now,
            canary: None,
            shadow: None,
        };
        ops.push(Op::put(
            cp.key(&Key::Tenant(key.tenant.clone())),
            serde_json::to_vec(&tenant)?,
        ));
        ops.push(Op::put(
            cp.key(&Key::ModelVersion(key.clone(), version.clone())),
            serde_json::to_vec(&m)?,
        ));
        ops.push(Op::put(
            cp.key(&Key::LiveVersion(key.clone())),
            serde_json::to_vec(&live)?,
        ));
        ops.push(Op::put(
            cp.key(&Key::Assignment(key.clone())),
            serde_json::to_vec(&assignment)?,
        ));
        if ops.len() >= TENANTS_PER_TXN * 4 {
            txns.push(std::mem::take(&mut ops));
        }
    }
    txns.push(ops);
    write_all(&store, txns).await?;

    progress("writing the simulated workers' resident keys");
    let bytes = serde_json::to_vec(&ResidentRecord { bytes: 4096 })?;
    let mut resident_keys = 0;
    for (i, key) in keys.iter().enumerate() {
        for &w in &members[i] {
            sims[w].models.push(key.clone());
        }
    }
    let mut txns = Vec::new();
    for sim in &sims {
        for chunk in sim.models.chunks(RESIDENTS_PER_TXN) {
            txns.push(
                chunk
                    .iter()
                    .map(|m| Op::Put {
                        key: cp.key(&Key::Resident(sim.id.clone(), m.clone(), version.clone())),
                        value: bytes.clone(),
                        lease: sim.lease,
                    })
                    .collect(),
            );
            resident_keys += chunk.len();
        }
    }
    write_all(&store, txns).await?;
    let failures = keeper.counts().failures;
    anyhow::ensure!(
        failures == 0,
        "{failures} keep-alives failed while populating"
    );
    Ok(World {
        samples: kept,
        sims,
        tenants,
        resident_keys,
        seconds: started.elapsed().as_secs_f64(),
        manifest: manifest.clone(),
    })
}

/// Runs every transaction, [`IN_FLIGHT`] at a time.
pub async fn write_all(
    store: &Arc<dyn KvStore>,
    txns: impl IntoIterator<Item = Vec<Op>>,
) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    for ops in txns {
        if ops.is_empty() {
            continue;
        }
        if running.len() >= IN_FLIGHT {
            running.join_next().await.context("a writer")???;
        }
        let store = store.clone();
        running.spawn(async move {
            let txn = ops.into_iter().fold(Txn::new(), Txn::op);
            match store.txn(txn).await? {
                TxnOutcome::Applied { .. } => Ok::<(), anyhow::Error>(()),
                TxnOutcome::Refused => bail!("an unconditional write was refused"),
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

/// The simulated workers' background life: lease keep-alives every TTL/3 and resident
/// changes at `changes_per_sec` (each an eviction or a reload of one held model).
#[derive(Debug)]
pub struct Heartbeats {
    task: tokio::task::JoinHandle<()>,
    counts: Arc<std::sync::Mutex<HeartbeatCounts>>,
}

/// What the heartbeat task did.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeartbeatCounts {
    pub keep_alives: u64,
    pub resident_writes: u64,
    pub failures: u64,
}

impl Heartbeats {
    pub fn start(cp: &ControlPlane, sims: &[Sim], changes_per_sec: f64) -> Self {
        let counts = Arc::new(std::sync::Mutex::new(HeartbeatCounts::default()));
        let task = tokio::spawn(run_heartbeats(
            cp.clone(),
            sims.to_vec(),
            changes_per_sec,
            counts.clone(),
        ));
        Self { task, counts }
    }

    pub fn counts(&self) -> HeartbeatCounts {
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_heartbeats(
    cp: ControlPlane,
    sims: Vec<Sim>,
    changes_per_sec: f64,
    counts: Arc<std::sync::Mutex<HeartbeatCounts>>,
) {
    let tick = Duration::from_millis(100);
    let refresh = SIM_TTL / 3;
    let per_tick = (sims.len() as f64 * tick.as_secs_f64() / refresh.as_secs_f64()).ceil() as usize;
    let changes_per_tick = changes_per_sec * tick.as_secs_f64();
    let version = VersionId::new("1").unwrap_or_else(|_| unreachable!("a valid version"));
    let value = serde_json::to_vec(&ResidentRecord { bytes: 4096 }).unwrap_or_default();
    let mut evicted: Vec<(usize, ModelKey)> = Vec::new();
    let (mut next_lease, mut owed) = (0usize, 0.0f64);
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let mut done = HeartbeatCounts::default();
        // All of a tick's keep-alives at once: one after another (two round trips
        // each), a slow etcd (a router re-listing 100,000 tenants) stretched a round of
        // 1,000 leases past their TTL.
        let first = next_lease;
        next_lease += per_tick.min(sims.len());
        let due = (first..next_lease).map(|i| sims[i % sims.len()].lease);
        for renewed in futures::future::join_all(due.map(|l| cp.store().keep_alive(l))).await {
            match renewed {
                Ok(_) => done.keep_alives += 1,
                Err(_) => done.failures += 1,
            }
        }
        owed += changes_per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            // Alternate: reload an evicted model, else evict a random held one.
            let op = if evicted.len() > 8 || (!evicted.is_empty() && fastrand::bool()) {
                let (w, m) = evicted.swap_remove(fastrand::usize(..evicted.len()));
                Op::Put {
                    key: cp.key(&Key::Resident(sims[w].id.clone(), m, version.clone())),
                    value: value.clone(),
                    lease: sims[w].lease,
                }
            } else {
                let w = fastrand::usize(..sims.len());
                if sims[w].models.is_empty() {
                    continue;
                }
                let m = sims[w].models[fastrand::usize(..sims[w].models.len())].clone();
                let key = cp.key(&Key::Resident(
                    sims[w].id.clone(),
                    m.clone(),
                    version.clone(),
                ));
                evicted.push((w, m));
                Op::delete(key)
            };
            match cp.store().txn(Txn::new().op(op)).await {
                Ok(_) => done.resident_writes += 1,
                Err(_) => done.failures += 1,
            }
        }
        let mut c = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.keep_alives += done.keep_alives;
        c.resident_writes += done.resident_writes;
        c.failures += done.failures;
    }
}
