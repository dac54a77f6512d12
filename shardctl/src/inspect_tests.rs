#![allow(clippy::unwrap_used)]

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
    assert_eq!(w0.resident.len(), 1);
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
