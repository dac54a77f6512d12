//! Read-only views of a [`Snapshot`]: one row type per inspect command, serialised as
//! is for `--json` and rendered as a table otherwise. Pure: the caller lists etcd once
//! and hands the snapshot in.
//!
//! Tenant rows never carry keys or key digests, only how many keys a tenant has.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shardline_shared::ids::{ModelKey, TenantId, WorkerId};
use shardline_shared::snapshot::Snapshot;

use super::table;

/// One worker: live (holding a lease), administratively marked, or still named by an
/// assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRow {
    pub id: WorkerId,
    /// `host:port`; `None` when the worker is not live.
    pub address: Option<String>,
    /// `active`, `cordoned` or `draining`.
    pub state: &'static str,
    pub live: bool,
    /// Model versions the worker reports loaded, and the bytes they hold.
    pub resident_models: u64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// Assignments naming the worker as a member.
    pub slots: u32,
    /// Assignments still naming it in `previous` (being replaced).
    pub previous_slots: u32,
    pub build_version: Option<String>,
}

/// Every worker the snapshot knows of, by id.
pub fn workers(snap: &Snapshot) -> Vec<WorkerRow> {
    let mut slots: BTreeMap<&WorkerId, (u32, u32)> = BTreeMap::new();
    for a in snap.assignments().values() {
        for w in &a.value.workers {
            slots.entry(w).or_default().0 += 1;
        }
        for w in &a.value.previous {
            slots.entry(w).or_default().1 += 1;
        }
    }
    let ids: BTreeSet<&WorkerId> = snap
        .workers()
        .keys()
        .chain(snap.admin().keys())
        .chain(slots.keys().copied())
        .collect();
    ids.into_iter()
        .map(|id| {
            let record = snap.workers().get(id).map(|r| &r.value);
            let (slots, previous_slots) = slots.get(id).copied().unwrap_or_default();
            let resident = snap.resident_totals(id);
            WorkerRow {
                id: id.clone(),
                address: record.map(|r| r.address.clone()),
                state: snap.admin_state(id).as_str(),
                live: record.is_some(),
                resident_models: resident.models,
                used_bytes: resident.bytes,
                capacity_bytes: record.map_or(0, |r| r.capacity_bytes),
                slots,
                previous_slots,
                build_version: record.map(|r| r.build_version.clone()),
            }
        })
        .collect()
}

/// The `workers` table.
pub fn workers_table(rows: &[WorkerRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let slots = if r.previous_slots > 0 {
                format!("{} (+{} prev)", r.slots, r.previous_slots)
            } else {
                r.slots.to_string()
            };
            vec![
                r.id.to_string(),
                r.address.clone().unwrap_or_else(|| "-".into()),
                r.state.to_owned(),
                if r.live { "yes" } else { "no" }.to_owned(),
                r.resident_models.to_string(),
                format!(
                    "{} / {}",
                    human_bytes(r.used_bytes),
                    human_bytes(r.capacity_bytes)
                ),
                slots,
            ]
        })
        .collect();
    let headers = [
        "WORKER",
        "ADDRESS",
        "STATE",
        "LIVE",
        "RESIDENT",
        "USED / CAP",
        "SLOTS",
    ];
    table::render(&headers, &cells)
}

/// One tenant, without its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRow {
    pub tenant: TenantId,
    /// Shard size in force (the tenant's own or the placement default).
    pub shard_size: u32,
    /// Whether `shard_size` is the placement default (the tenant sets none).
    pub default_shard_size: bool,
    pub models: usize,
    pub max_in_flight: u32,
    pub rate_per_sec: u32,
    /// How many API keys are valid (never the keys or their digests).
    pub keys: usize,
    pub created_at: u64,
}

/// Every tenant.
pub fn tenants(snap: &Snapshot) -> Vec<TenantRow> {
    let mut models: BTreeMap<&TenantId, usize> = BTreeMap::new();
    for key in snap.models().keys() {
        *models.entry(&key.tenant).or_default() += 1;
    }
    snap.tenants()
        .iter()
        .map(|(id, t)| TenantRow {
            tenant: id.clone(),
            shard_size: snap.shard_size(id),
            default_shard_size: t.value.shard_size.is_none(),
            models: models.get(id).copied().unwrap_or(0),
            max_in_flight: t.value.limits.max_in_flight,
            rate_per_sec: t.value.limits.rate_per_sec,
            keys: t.value.keys.len(),
            created_at: t.value.created_at,
        })
        .collect()
}

/// The `tenants` table.
pub fn tenants_table(rows: &[TenantRow]) -> String {
    let limit = |v: u32| if v == 0 { "-".into() } else { v.to_string() };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let k = if r.default_shard_size {
                format!("{} (default)", r.shard_size)
            } else {
                r.shard_size.to_string()
            };
            vec![
                r.tenant.to_string(),
                k,
                r.models.to_string(),
                limit(r.max_in_flight),
                limit(r.rate_per_sec),
                r.keys.to_string(),
            ]
        })
        .collect();
    let headers = ["TENANT", "K", "MODELS", "MAX IN FLIGHT", "RATE/S", "KEYS"];
    table::render(&headers, &cells)
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    pub version: String,
    pub live: bool,
    /// Size of `model.safetensors` in bytes.
    pub size: u64,
    pub weights_sha256: String,
    pub config_sha256: String,
    pub location: String,
    pub published_at: u64,
}

/// One model with its versions and assignment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    pub tenant: TenantId,
    pub model: String,
    pub live: Option<String>,
    /// The version taking a share of unpinned requests, if any.
    pub canary: Option<CanaryRow>,
    /// The version scoring a copy of a sample of unpinned requests, if any.
    pub shadow: Option<ShadowRow>,
    pub versions: Vec<VersionRow>,
    /// Current shard members (empty before the controller placed the model).
    pub assignment: Vec<WorkerId>,
}

/// A model's canary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryRow {
    pub version: String,
    /// Share of unpinned requests, in percent.
    pub percent: f64,
    pub sticky: bool,
}

/// A model's shadow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowRow {
    pub version: String,
    /// Share of unpinned requests copied, in percent.
    pub percent: f64,
}

/// Every model, or those of `tenant`.
pub fn models(snap: &Snapshot, tenant: Option<&TenantId>) -> Vec<ModelRow> {
    snap.models()
        .iter()
        .filter(|(key, _)| tenant.is_none_or(|t| key.tenant == *t))
        .map(|(key, entry)| {
            let live = entry.live.as_ref().map(|l| l.value.version.to_string());
            let versions = entry
                .versions
                .values()
                .map(|v| {
                    let m = &v.value;
                    VersionRow {
                        version: m.version.to_string(),
                        live: live.as_deref() == Some(m.version.as_str()),
                        size: m.weights_file.size,
                        weights_sha256: m.weights_file.sha256.to_hex(),
                        config_sha256: m.config_file.sha256.to_hex(),
                        location: m.location.to_string(),
                        published_at: m.published_at,
                    }
                })
                .collect();
            let canary = entry
                .live
                .as_ref()
                .and_then(|l| l.value.canary.as_deref())
                .map(|c| CanaryRow {
                    version: c.version.to_string(),
                    percent: f64::from(c.basis_points) / 100.0,
                    sticky: c.sticky,
                });
            let shadow = entry
                .live
                .as_ref()
                .and_then(|l| l.value.shadow.as_deref())
                .map(|s| ShadowRow {
                    version: s.version.to_string(),
                    percent: f64::from(s.basis_points) / 100.0,
                });
            ModelRow {
                tenant: key.tenant.clone(),
                model: key.model.to_string(),
                live,
                canary,
                shadow,
                versions,
                assignment: assigned(snap, key),
            }
        })
        .collect()
}

fn assigned(snap: &Snapshot, key: &ModelKey) -> Vec<WorkerId> {
    snap.assignments()
        .get(key)
        .map(|a| a.value.workers.clone())
        .unwrap_or_default()
}

/// The `models` table: one line per model, size and digest of the live version.
pub fn models_table(rows: &[ModelRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let live = r.versions.iter().find(|v| v.live);
            let versions: Vec<&str> = r.versions.iter().map(|v| v.version.as_str()).collect();
            vec![
                format!("{}/{}", r.tenant, r.model),
                versions.join(","),
                r.live.clone().unwrap_or_else(|| "-".into()),
                r.canary.as_ref().map_or("-".into(), |c| {
                    format!(
                        "{} {}%{}",
                        c.version,
                        c.percent,
                        if c.sticky { " sticky" } else { "" }
                    )
                }),
                r.shadow
                    .as_ref()
                    .map_or("-".into(), |s| format!("{} {}%", s.version, s.percent)),
                live.map_or("-".into(), |v| human_bytes(v.size)),
                live.map_or("-".into(), |v| v.weights_sha256.chars().take(12).collect()),
                join(&r.assignment),
            ]
        })
        .collect();
    let headers = [
        "MODEL",
        "VERSIONS",
        "LIVE",
        "CANARY",
        "SHADOW",
        "SIZE",
        "SHA256",
        "ASSIGNMENT",
    ];
    table::render(&headers, &cells)
}

/// One stored assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignmentRow {
    pub tenant: TenantId,
    pub model: String,
    pub epoch: u64,
    pub workers: Vec<WorkerId>,
    pub previous: Vec<WorkerId>,
    /// The etcd `mod_revision` (what a compare-and-swap checks).
    pub mod_revision: i64,
}

/// Every stored assignment, or those of `tenant`.
pub fn assignments(snap: &Snapshot, tenant: Option<&TenantId>) -> Vec<AssignmentRow> {
    snap.assignments()
        .iter()
        .filter(|(key, _)| tenant.is_none_or(|t| key.tenant == *t))
        .map(|(key, a)| AssignmentRow {
            tenant: key.tenant.clone(),
            model: key.model.to_string(),
            epoch: a.value.epoch,
            workers: a.value.workers.clone(),
            previous: a.value.previous.clone(),
            mod_revision: a.mod_revision,
        })
        .collect()
}

/// The `assignments` table.
pub fn assignments_table(rows: &[AssignmentRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}/{}", r.tenant, r.model),
                r.epoch.to_string(),
                join(&r.workers),
                if r.previous.is_empty() {
                    "-".into()
                } else {
                    join(&r.previous)
                },
            ]
        })
        .collect();
    table::render(&["MODEL", "EPOCH", "WORKERS", "PREVIOUS"], &cells)
}

fn join(ids: &[WorkerId]) -> String {
    let names: Vec<&str> = ids.iter().map(WorkerId::as_str).collect();
    names.join(",")
}

/// `1536` → `1.5 KiB`; binary units, one decimal above bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::World;

    fn world() -> World {
        World::new()
            .worker("w-0")
            .worker("w-1")
            .admin("w-1", "cordoned")
            .admin("w-9", "draining")
            .tenant("acme", Some(2))
            .tenant("zeta", None)
            .model("acme", "risk")
            .version("acme", "risk", "2", 5)
            .model("zeta", "churn")
            .assignment("acme", "risk", &["w-0", "w-1"], &[])
            .assignment("zeta", "churn", &["w-1", "w-2"], &["w-0"])
    }

    #[test]
    fn workers_lists_live_marked_and_assigned_workers_with_slots() {
        let rows = workers(&world().snapshot());
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["w-0", "w-1", "w-2", "w-9"]);
        let w0 = &rows[0];
        assert!(w0.live);
        assert_eq!((w0.slots, w0.previous_slots), (1, 1));
        assert_eq!(w0.address.as_deref(), Some("w-0.local:9000"));
        assert_eq!((w0.resident_models, w0.used_bytes), (1, 1024));
        assert_eq!(rows[1].state, "cordoned");
        assert_eq!(rows[1].slots, 2);
        assert!(!rows[2].live, "w-2 is only named by an assignment");
        assert_eq!(rows[3].state, "draining");
        let table = workers_table(&rows);
        assert!(table.starts_with("WORKER"), "{table}");
        assert!(table.contains("1 (+1 prev)"), "{table}");
        assert!(table.contains("1.0 KiB / 1.0 GiB"), "{table}");
    }

    #[test]
    fn tenants_show_effective_shard_size_and_never_keys() {
        let rows = tenants(&world().snapshot());
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].shard_size, rows[0].default_shard_size), (2, false));
        assert_eq!((rows[1].shard_size, rows[1].default_shard_size), (4, true));
        assert_eq!(rows[0].models, 1);
        assert_eq!(rows[0].keys, 1);
        let json = serde_json::to_string(&rows).unwrap();
        assert!(
            !json.contains(&"ab".repeat(32)),
            "a key digest leaked: {json}"
        );
        assert!(tenants_table(&rows).contains("4 (default)"));
    }

    #[test]
    fn models_show_versions_live_and_assignment_and_filter_by_tenant() {
        let snap = world().snapshot();
        let acme: TenantId = "acme".parse().unwrap();
        let rows = models(&snap, Some(&acme));
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.live.as_deref(), Some("1"));
        let versions: Vec<(&str, bool)> = r
            .versions
            .iter()
            .map(|v| (v.version.as_str(), v.live))
            .collect();
        assert_eq!(versions, [("1", true), ("2", false)]);
        assert_eq!(r.assignment.len(), 2);
        let table = models_table(&rows);
        assert!(table.contains("acme/risk  1,2"), "{table}");
        assert!(table.contains("cdcdcdcdcdcd "), "sha256 prefix: {table}");
        assert_eq!(models(&snap, None).len(), 2);
    }

    #[test]
    fn assignments_carry_epoch_previous_and_revision() {
        let rows = assignments(&world().snapshot(), None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].previous.len(), 1);
        assert!(rows[1].mod_revision > 0);
        let table = assignments_table(&rows);
        assert!(table.contains("zeta/churn  1      w-1,w-2  w-0"), "{table}");
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }
}
