//! Unit tests of [`Snapshot`]: every section built from key/values, refused values
//! reported and recovered, deletes, copy-on-write sections, the placement problem, and
//! the property that applying watch events equals re-listing.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::auth::ApiKey;
use crate::manifest::{FileDigest, ModelConfig};

pub(crate) fn manifest_json(tenant: &str, model: &str, version: &str) -> String {
    let config = ModelConfig::from_json(
        br#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"features","dim":4},
             "layers":[{"weight":"w","bias":"b","activation":"sigmoid"}],"output":{"name":"risk","dim":1}}"#,
    )
    .unwrap();
    let digest = FileDigest {
        sha256: crate::digest::Sha256Sum::from_hex(&"ab".repeat(32)).unwrap(),
        size: 10,
    };
    let m = Manifest {
        tenant: TenantId::new(tenant).unwrap(),
        model: crate::ModelName::new(model).unwrap(),
        version: VersionId::new(version).unwrap(),
        location: format!("{tenant}/{model}/{version}").into(),
        config_file: digest.clone(),
        weights_file: digest,
        config: config.into(),
        dims: vec![4, 1].into(),
        published_at: 1,
    };
    serde_json::to_string(&m).unwrap()
}

fn put<'a>(snap: &mut Snapshot, key: &'a str, value: &'a str, rev: i64) -> Result<(), Invalid> {
    snap.apply(Change::Put {
        key,
        value: value.as_bytes(),
        mod_revision: rev,
    })
}

fn mk(t: &str, m: &str) -> ModelKey {
    ModelKey::parse_shard_key(&format!("{t}/{m}")).unwrap()
}

#[test]
fn builds_every_section() {
    let key = ApiKey::generate().unwrap();
    let tenant = serde_json::to_string(&TenantRecord {
        shard_size: Some(3),
        limits: Default::default(),
        keys: vec![key.digest(1)],
        created_at: 1,
    })
    .unwrap();
    let manifest = manifest_json("acme", "risk", "1");
    let kvs: Vec<(&str, &str)> = vec![
        (
            "/shardline/workers/w1",
            r#"{"address":"127.0.0.1:1","capacity_bytes":100,"build_version":"t"}"#,
        ),
        ("/shardline/worker-admin/w1", r#"{"state":"cordoned"}"#),
        ("/shardline/tenants/acme", &tenant),
        ("/shardline/models/acme/risk/1", &manifest),
        ("/shardline/models/acme/risk", r#"{"version":"1"}"#),
        (
            "/shardline/assignments/acme/risk",
            r#"{"workers":["w1"],"epoch":1}"#,
        ),
        ("/other/ignored", "garbage"),
    ];
    let (snap, invalid) = Snapshot::from_kvs(
        Prefix::default(),
        42,
        kvs.iter()
            .enumerate()
            .map(|(i, (k, v))| (*k, v.as_bytes(), i as i64 + 1)),
    );
    assert!(invalid.is_empty(), "{invalid:?}");
    assert_eq!(snap.revision(), 42);
    let w1 = WorkerId::new("w1").unwrap();
    assert_eq!(snap.workers()[&w1].mod_revision, 1);
    assert_eq!(snap.admin_state(&w1), AdminState::Cordoned);
    let acme = TenantId::new("acme").unwrap();
    assert_eq!(snap.tenant_for_key(key.expose()), Some(&acme));
    assert_eq!(snap.tenant_for_key("sl_nope"), None);
    assert_eq!(snap.shard_size(&acme), 3);
    let m = mk("acme", "risk");
    assert_eq!(
        snap.model(&m)
            .unwrap()
            .live_manifest()
            .unwrap()
            .version
            .as_str(),
        "1"
    );
    assert_eq!(snap.assignments()[&m].value.workers, vec![w1]);
    assert_eq!(snap.placement(), PlacementConfig::default());
}

#[test]
fn corrupt_values_are_skipped_reported_and_recoverable() {
    let mut snap = Snapshot::empty(Prefix::default());
    let good = r#"{"workers":["w1"],"epoch":1}"#;
    put(&mut snap, "/shardline/assignments/a/m", good, 5).unwrap();
    for (key, bad) in [
        ("/shardline/assignments/a/m", "{not json"),
        (
            "/shardline/assignments/a/m",
            r#"{"workers":["../etc"],"epoch":1}"#,
        ),
        ("/shardline/workers/w1", r#"{"address":1}"#),
        (
            "/shardline/placement",
            r#"{"algorithm":"ring","seed":"00","default_k":1,"max_overlap":0,"epsilon_permille":0,"epoch":1}"#,
        ),
        (
            "/shardline/tenants/t",
            r#"{"keys":[{"id":"x","sha256":"zz","created_at":0}]}"#,
        ),
        ("/shardline/models/a/m/1", &manifest_json("a", "other", "1")),
        ("/shardline/NOT/a/key", "{}"),
    ] {
        let err = put(&mut snap, key, bad, 6).expect_err(key);
        assert_eq!(err.key, key);
        assert!(!err.reason.is_empty());
        assert!(snap.invalid().contains_key(key));
    }
    // The refused assignment counts as absent, deterministically.
    assert!(snap.assignments().is_empty());
    assert!(snap.workers().is_empty());
    put(&mut snap, "/shardline/assignments/a/m", good, 7).unwrap();
    assert_eq!(snap.assignments()[&mk("a", "m")].mod_revision, 7);
    assert!(!snap.invalid().contains_key("/shardline/assignments/a/m"));
}

#[test]
fn deletes_remove_and_models_disappear_when_empty() {
    let mut snap = Snapshot::empty(Prefix::default());
    let manifest = manifest_json("a", "m", "1");
    put(&mut snap, "/shardline/models/a/m/1", &manifest, 1).unwrap();
    put(&mut snap, "/shardline/models/a/m", r#"{"version":"1"}"#, 2).unwrap();
    snap.apply(Change::Delete {
        key: "/shardline/models/a/m/1",
    })
    .unwrap();
    assert!(snap.model(&mk("a", "m")).unwrap().live_manifest().is_none());
    snap.apply(Change::Delete {
        key: "/shardline/models/a/m",
    })
    .unwrap();
    assert!(snap.models().is_empty());
}

#[test]
fn heartbeat_does_not_copy_other_sections() {
    let mut snap = Snapshot::empty(Prefix::default());
    put(
        &mut snap,
        "/shardline/models/a/m/1",
        &manifest_json("a", "m", "1"),
        1,
    )
    .unwrap();
    let before = snap.clone();
    put(
        &mut snap,
        "/shardline/workers/w1",
        r#"{"address":"x:1","capacity_bytes":1,"build_version":"t"}"#,
        2,
    )
    .unwrap();
    assert!(before.models.ptr_eq(&snap.models));
    assert!(!before.workers.ptr_eq(&snap.workers));
}

/// A tenant record holding `keys`, as JSON.
fn tenant_json(keys: &[&ApiKey]) -> String {
    serde_json::to_string(&TenantRecord {
        shard_size: None,
        limits: Default::default(),
        keys: keys.iter().map(|k| k.digest(1)).collect(),
        created_at: 1,
    })
    .unwrap()
}

#[test]
fn key_index_follows_each_tenant_put_and_delete_without_touching_others() {
    let [a1, a2, b1] = [(); 3].map(|()| ApiKey::generate().unwrap());
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let mut snap = Snapshot::empty(Prefix::default());
    put(&mut snap, "/shardline/tenants/a", &tenant_json(&[&a1]), 1).unwrap();
    put(&mut snap, "/shardline/tenants/b", &tenant_json(&[&b1]), 2).unwrap();
    assert_eq!(snap.tenant_for_key(a1.expose()), Some(&a));
    assert_eq!(snap.tenant_for_key(b1.expose()), Some(&b));
    // Rotation: a's old key stops, its new one works, b's is untouched.
    put(&mut snap, "/shardline/tenants/a", &tenant_json(&[&a2]), 3).unwrap();
    assert_eq!(snap.tenant_for_key(a1.expose()), None);
    assert_eq!(snap.tenant_for_key(a2.expose()), Some(&a));
    assert_eq!(snap.tenant_for_key(b1.expose()), Some(&b));
    // A refused value removes the tenant and its keys.
    assert!(put(&mut snap, "/shardline/tenants/a", "garbage", 4).is_err());
    assert_eq!(snap.tenant_for_key(a2.expose()), None);
    put(
        &mut snap,
        "/shardline/tenants/a",
        &tenant_json(&[&a1, &a2]),
        5,
    )
    .unwrap();
    assert_eq!(snap.tenant_for_key(a1.expose()), Some(&a));
    snap.apply(Change::Delete {
        key: "/shardline/tenants/a",
    })
    .unwrap();
    assert_eq!(snap.tenant_for_key(a1.expose()), None);
    assert_eq!(snap.tenant_for_key(a2.expose()), None);
    assert_eq!(snap.tenant_for_key(b1.expose()), Some(&b));
}

#[test]
fn a_key_two_tenants_list_authenticates_neither_until_one_lets_go() {
    let [k, own] = [(); 2].map(|()| ApiKey::generate().unwrap());
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let mut snap = Snapshot::empty(Prefix::default());
    // b writes after a, then a goes: the order that once left b without its key.
    put(&mut snap, "/shardline/tenants/b", &tenant_json(&[&k]), 1).unwrap();
    put(
        &mut snap,
        "/shardline/tenants/a",
        &tenant_json(&[&k, &own, &k]),
        2,
    )
    .unwrap();
    assert_eq!(snap.tenant_for_key(k.expose()), None, "ambiguous key");
    assert_eq!(snap.tenant_for_key(own.expose()), Some(&a));
    let listed = |snap: &Snapshot| {
        let kvs: Vec<(String, String)> = snap
            .tenants()
            .iter()
            .map(|(id, t)| {
                let json = serde_json::to_string(&t.value).unwrap();
                (format!("/shardline/tenants/{}", id.as_str()), json)
            })
            .collect();
        let (s, _) = Snapshot::from_kvs(
            Prefix::default(),
            9,
            kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes(), 1)),
        );
        s
    };
    assert_eq!(listed(&snap).tenant_for_key(k.expose()), None);
    snap.apply(Change::Delete {
        key: "/shardline/tenants/a",
    })
    .unwrap();
    assert_eq!(snap.tenant_for_key(k.expose()), Some(&b));
    assert_eq!(snap.tenant_for_key(own.expose()), None);
    assert_eq!(listed(&snap).tenant_for_key(k.expose()), Some(&b));
    // a rotates k out instead of being deleted: b gets it back the same way.
    put(&mut snap, "/shardline/tenants/a", &tenant_json(&[&k]), 3).unwrap();
    assert_eq!(snap.tenant_for_key(k.expose()), None);
    put(&mut snap, "/shardline/tenants/a", &tenant_json(&[&own]), 4).unwrap();
    assert_eq!(snap.tenant_for_key(k.expose()), Some(&b));
    assert_eq!(snap.tenant_for_key(own.expose()), Some(&a));
}

fn arb_op() -> impl Strategy<Value = (usize, Option<usize>)> {
    (0..KEYS.len(), prop::option::of(0..VALUES.len()))
}

/// Tenant `a-b` sorts before `a` by key (`-` < `/`) but after it by name, so a listing
/// meets their models out of map order and `a`'s live pointer apart from its manifests.
const KEYS: &[&str] = &[
    "/shardline/workers/w1",
    "/shardline/workers/w2",
    "/shardline/worker-admin/w1",
    "/shardline/assignments/a/m",
    "/shardline/assignments/a-b/m",
    "/shardline/models/a/m",
    "/shardline/models/a/m/1",
    "/shardline/models/a/m-x",
    "/shardline/models/a-b/m",
    "/shardline/models/a-b/m/1",
    "/shardline/placement",
    "/shardline/tenants/a",
    "/shardline/tenants/a-b",
    "/shardline/resident/w1/a/m/1",
    "/shardline/resident/w2/a/m/1",
    "/shardline/resident/w1/a/m/2",
    "/shardline/resident/w2/a-b/m/1",
];

/// Values by index; a value put under a key it does not fit is refused the same way
/// by events and by a listing.
static VALUES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    let (k1, k2) = (ApiKey::generate().unwrap(), ApiKey::generate().unwrap());
    let mut v: Vec<String> = [
        r#"{"address":"x:1","capacity_bytes":1,"build_version":"t"}"#,
        r#"{"state":"draining"}"#,
        r#"{"workers":["w1","w2"],"epoch":2}"#,
        r#"{"version":"1"}"#,
        r#"{"algorithm":"rendezvous-sticky/v1","seed":"000102030405060708090a0b0c0d0e0f","default_k":2,"max_overlap":1,"epsilon_permille":0,"epoch":1}"#,
        r#"{"shard_size":2}"#,
        r#"{"bytes":5}"#,
        r#"{"bytes":7}"#,
        "garbage",
    ]
    .map(String::from)
    .to_vec();
    v.push(manifest_json("a", "m", "1"));
    v.push(manifest_json("a-b", "m", "1"));
    // Two tenants may list the same key digest (a value put under both tenant keys).
    v.push(tenant_json(&[&k1]));
    v.push(tenant_json(&[&k1, &k2]));
    v
});

proptest! {
    /// Applying any sequence of events gives the same view as listing the final state:
    /// the property the watcher's correctness rests on.
    #[test]
    fn incremental_equals_relist(ops in prop::collection::vec(arb_op(), 0..40)) {
        let mut live = Snapshot::empty(Prefix::default());
        let mut store: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
        for (rev, (k, v)) in ops.iter().enumerate() {
            let rev = rev as i64 + 1;
            let key = KEYS[*k];
            match v {
                Some(v) => {
                    let _ = put(&mut live, key, &VALUES[*v], rev);
                    store.insert(key, (VALUES[*v].as_str(), rev));
                }
                None => {
                    let _ = live.apply(Change::Delete { key });
                    store.remove(key);
                }
            }
        }
        let rev = ops.len() as i64;
        live.set_revision(rev);
        let (listed, _) = Snapshot::from_kvs(
            Prefix::default(),
            rev,
            store.iter().map(|(k, (v, r))| (*k, v.as_bytes(), *r)),
        );
        prop_assert_eq!(live.workers(), listed.workers());
        prop_assert_eq!(live.admin(), listed.admin());
        prop_assert_eq!(live.tenants(), listed.tenants());
        prop_assert_eq!(live.models(), listed.models());
        prop_assert_eq!(live.assignments(), listed.assignments());
        prop_assert_eq!(live.placement_record(), listed.placement_record());
        prop_assert_eq!(live.invalid(), listed.invalid());
        for (t, m) in [("a", "m"), ("a-b", "m"), ("a", "m-x")] {
            let model = mk(t, m);
            let sorted = |s: &Snapshot| {
                let mut r = s.residents(&model).to_vec();
                r.sort_by(|a, b| (&a.worker, &a.version).cmp(&(&b.worker, &b.version)));
                r
            };
            prop_assert_eq!(sorted(&live), sorted(&listed));
        }
        // The key index is the same whatever order the writes came in, including digests
        // two tenants list (which authenticate neither).
        prop_assert_eq!(&live.tenants.by_digest, &listed.tenants.by_digest);
        prop_assert_eq!(&live.tenants.shared, &listed.tenants.shared);
        for w in ["w1", "w2"] {
            let w = WorkerId::new(w).unwrap();
            prop_assert_eq!(live.resident_totals(&w), listed.resident_totals(&w));
        }
    }
}

#[test]
fn resident_keys_are_indexed_by_model_and_totalled_by_worker() {
    let mut snap = Snapshot::empty(Prefix::default());
    let (w1, w2) = (WorkerId::new("w1").unwrap(), WorkerId::new("w2").unwrap());
    let m = ModelKey::new(
        TenantId::new("a").unwrap(),
        crate::ModelName::new("m").unwrap(),
    );
    let (v1, v2) = (VersionId::new("1").unwrap(), VersionId::new("2").unwrap());
    put(
        &mut snap,
        "/shardline/resident/w1/a/m/1",
        r#"{"bytes":100}"#,
        1,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/resident/w1/a/m/2",
        r#"{"bytes":50}"#,
        2,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/resident/w2/a/m/2",
        r#"{"bytes":50}"#,
        3,
    )
    .unwrap();
    assert!(snap.is_resident(&w1, &m, &v1));
    assert!(!snap.is_resident(&w2, &m, &v1));
    assert!(snap.is_resident(&w2, &m, &v2));
    assert_eq!(snap.residents(&m).len(), 3);
    let totals = |models, bytes| ResidentTotals { models, bytes };
    assert_eq!(snap.resident_totals(&w1), totals(2, 150));
    // A rewrite replaces the bytes; a delete (eviction, or the lease ending) removes it.
    put(
        &mut snap,
        "/shardline/resident/w1/a/m/1",
        r#"{"bytes":70}"#,
        4,
    )
    .unwrap();
    assert_eq!(snap.resident_totals(&w1), totals(2, 120));
    snap.apply(Change::Delete {
        key: "/shardline/resident/w1/a/m/1",
    })
    .unwrap();
    assert!(!snap.is_resident(&w1, &m, &v1));
    assert_eq!(snap.resident_totals(&w1), totals(1, 50));
    // A refused value counts as absent.
    assert!(
        put(
            &mut snap,
            "/shardline/resident/w2/a/m/2",
            r#"{"bytes":-1}"#,
            5
        )
        .is_err()
    );
    assert!(!snap.is_resident(&w2, &m, &v2));
    assert_eq!(snap.resident_totals(&w2), totals(0, 0));
}

#[test]
fn workers_of_earlier_releases_report_residents_in_their_record() {
    let mut snap = Snapshot::empty(Prefix::default());
    let record = r#"{"address":"x:1","capacity_bytes":1,"build_version":"old","used_bytes":9,
        "resident":[{"tenant":"a","model":"m","version":"1","bytes":9}]}"#;
    put(&mut snap, "/shardline/workers/w1", record, 1).unwrap();
    let w1 = WorkerId::new("w1").unwrap();
    let m = ModelKey::new(
        TenantId::new("a").unwrap(),
        crate::ModelName::new("m").unwrap(),
    );
    assert!(snap.is_resident(&w1, &m, &VersionId::new("1").unwrap()));
    assert!(!snap.is_resident(&w1, &m, &VersionId::new("2").unwrap()));
    assert_eq!(
        snap.resident_totals(&w1),
        ResidentTotals {
            models: 1,
            bytes: 9
        }
    );
}

#[test]
fn placement_problem_reflects_liveness_admin_state_and_live_models() {
    let mut snap = Snapshot::empty(Prefix::default());
    let worker = r#"{"address":"x:1","capacity_bytes":1,"build_version":"t"}"#;
    for w in ["w1", "w2", "w3"] {
        put(&mut snap, &format!("/shardline/workers/{w}"), worker, 1).unwrap();
    }
    put(
        &mut snap,
        "/shardline/worker-admin/w2",
        r#"{"state":"cordoned"}"#,
        2,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/worker-admin/w3",
        r#"{"state":"draining"}"#,
        2,
    )
    .unwrap();
    // Admin state of a worker that is not live does not make it appear.
    put(
        &mut snap,
        "/shardline/worker-admin/w9",
        r#"{"state":"cordoned"}"#,
        2,
    )
    .unwrap();
    put(&mut snap, "/shardline/tenants/a", r#"{"shard_size":2}"#, 3).unwrap();
    put(
        &mut snap,
        "/shardline/models/a/live/1",
        &manifest_json("a", "live", "1"),
        4,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/models/a/live",
        r#"{"version":"1"}"#,
        5,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/models/a/draft/1",
        &manifest_json("a", "draft", "1"),
        6,
    )
    .unwrap();
    put(
        &mut snap,
        "/shardline/assignments/a/live",
        r#"{"workers":["w3","w1"],"epoch":1}"#,
        7,
    )
    .unwrap();

    let problem = snap.placement_problem();
    let flags: Vec<(&str, bool, bool)> = problem
        .workers
        .iter()
        .map(|w| (w.id.as_str(), w.keep, w.take))
        .collect();
    assert_eq!(
        flags,
        [
            ("w1", true, true),
            ("w2", true, false),
            ("w3", false, false)
        ]
    );
    assert_eq!(
        problem.shards.len(),
        1,
        "only models with a live version need a shard"
    );
    let shard = &problem.shards[0];
    assert_eq!((shard.key.model.as_str(), shard.k), ("live", 2));
    assert_eq!(
        shard.current,
        [WorkerId::new("w3").unwrap(), WorkerId::new("w1").unwrap()]
    );

    // Placing it drops the draining member and keeps the survivor.
    let plan = crate::placement::place(&problem, &snap.placement_params().unwrap());
    let members = &plan.shards[&shard.key];
    assert_eq!(members[0].as_str(), "w1");
    assert_eq!(members.len(), 1, "w2 is cordoned and takes no new members");
}
