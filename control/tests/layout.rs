//! Writes every kind of key through the real code paths, then reads the prefix back
//! with `etcdctl` (what an operator would run) and checks it against
//! `docs/etcd-layout.md`: every key documented, every value readable JSON, no plain
//! API key anywhere.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use shardline_control::{
    ControlMetrics, ControlPlane, EtcdStore, LeaseConfig, Registration, ResidentSet,
};
use shardline_shared::keys::Prefix;
use shardline_shared::records::{AdminState, Assignment, PlacementConfig, TenantLimits};
use shardline_shared::{ModelKey, TenantId, VersionId, WorkerId};
use shardline_testkit::EtcdProcess;
use shardline_testkit::wait::eventually;

/// Key patterns from the table in docs/etcd-layout.md, e.g. `<prefix>/workers/<worker>`.
fn documented_patterns() -> Vec<String> {
    let doc = include_str!("../../docs/etcd-layout.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|p| p.starts_with("<prefix>/"))
        .map(str::to_owned)
        .collect()
}

fn matches(pattern: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix("/shardline/") else {
        return false;
    };
    let pat: Vec<&str> = pattern.trim_start_matches("<prefix>/").split('/').collect();
    let segs: Vec<&str> = rest.split('/').collect();
    pat.len() == segs.len()
        && pat.iter().zip(&segs).all(|(p, s)| {
            if p.starts_with('<') {
                shardline_shared::ids::validate_name("segment", s).is_ok()
            } else {
                p == s
            }
        })
}

#[tokio::test]
async fn etcdctl_shows_documented_keys_with_readable_json() {
    let etcd = EtcdProcess::start().await.expect("etcd");
    let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    let cp = ControlPlane::new(store.clone(), Prefix::default());

    let acme = TenantId::new("acme").unwrap();
    let key = cp
        .create_tenant(&acme, Some(3), TenantLimits::default())
        .await
        .unwrap();
    let m = shardline_testkit::models::manifest("acme", "risk", "1");
    cp.publish_version(&m, false).await.unwrap();
    cp.set_live(&m.key(), &m.version).await.unwrap();
    let w = WorkerId::new("w-1").unwrap();
    cp.set_worker_admin(&w, AdminState::Cordoned).await.unwrap();
    let assignment = Assignment {
        workers: vec![w.clone()],
        epoch: 1,
        previous: vec![],
    };
    cp.write_assignment(
        &ModelKey::parse_shard_key("acme/risk").unwrap(),
        &assignment,
        None,
    )
    .await
    .unwrap();
    cp.write_placement(&PlacementConfig::default(), None)
        .await
        .unwrap();
    let config = LeaseConfig {
        ttl: Duration::from_secs(10),
        min_update_interval: Duration::from_secs(1),
    };
    let reg = Registration::start(
        &cp,
        &w,
        support::worker_record(),
        config,
        ControlMetrics::unregistered().unwrap(),
    )
    .await
    .unwrap();
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();
    reg.set_resident(ResidentSet::from([(
        (model, VersionId::new("1").unwrap()),
        4096,
    )]));
    let residents = cp.prefix().worker_residents(&w);
    eventually("resident key written", Duration::from_secs(5), || async {
        !cp.store().list(&residents).await.unwrap().kvs.is_empty()
    })
    .await;

    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            "--prefix",
            "/shardline",
        ])
        .output()
        .await
        .expect("etcdctl runs (apt package etcd-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("etcdctl prints text");
    assert!(
        !text.contains(&key.expose()[3..]),
        "plain API key must never be stored"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "key/value pairs:\n{text}");

    let patterns = documented_patterns();
    assert!(patterns.len() >= 8, "table parsed: {patterns:?}");
    let mut used = std::collections::BTreeSet::new();
    for pair in lines.chunks(2) {
        let (k, v) = (pair[0], pair[1]);
        let pattern = patterns
            .iter()
            .find(|p| matches(p, k))
            .unwrap_or_else(|| panic!("{k} is not documented in docs/etcd-layout.md"));
        used.insert(pattern.clone());
        let value: serde_json::Value =
            serde_json::from_str(v).unwrap_or_else(|e| panic!("{k}: value is not JSON ({e}): {v}"));
        assert!(value.is_object(), "{k}: {v}");
    }
    // The controller's election key is written by routers and holds plain text (its shape
    // is checked by `router/tests/failover.rs`, which reads it to find the leader); every other
    // documented kind of key must have been produced by the fixtures above.
    let missing: Vec<_> = patterns
        .iter()
        .filter(|p| !used.contains(*p) && !p.contains("/controller/"))
        .collect();
    assert!(missing.is_empty(), "fixtures did not cover {missing:?}");
    reg.shutdown().await.unwrap();
}
