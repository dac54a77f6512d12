//! A rolling upgrade seen from the older release: every kind of key holds a value
//! written by a "newer release" — an extra field at the top and an extra field in every
//! nested object, a worker-admin state and an activation this release does not know —
//! and a fleet of real router and worker processes keeps serving: keys authenticate,
//! requests score the same, workers are routed to, nothing is dropped as invalid, and
//! what was ignored is counted (`docs/etcd-layout.md`, schema evolution).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use shardline_control::store::{Op, Txn, TxnOutcome};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Key;
use shardline_shared::metrics::{
    CONTROL_IGNORED_FIELDS_TOTAL, CONTROL_INVALID_VALUES_TOTAL, CONTROL_SNAPSHOT_REVISION,
};
use shardline_testkit::fleet::{Reply, TestFleet, infer_body, rows};
use shardline_testkit::{eventually, metric_sum};

/// Adds what a newer release might have added: a field at the top, and one in every
/// nested object (a tenant's limits and keys, a manifest's files and config, ...).
fn from_the_future(value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                from_the_future(v, depth + 1);
            }
            if depth == 0 {
                map.insert(
                    "added_by_a_newer_release".into(),
                    json!({"anything": [1, {"deeper": "x"}]}),
                );
            } else {
                map.insert("added_nested".into(), json!(true));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| from_the_future(v, depth + 1)),
        _ => {}
    }
}

/// Rewrites every JSON value under the fleet's prefix as a newer release would have
/// written it (leased keys keep their lease); returns the kinds rewritten.
async fn rewrite_everything(fleet: &TestFleet) -> Vec<String> {
    let root = fleet.cp.prefix().root().to_owned();
    let listing = fleet.cp.store().list(&root).await.unwrap();
    let mut kinds = Vec::new();
    for kv in listing.kvs {
        let Ok(mut value) = serde_json::from_slice::<Value>(&kv.value) else {
            continue; // controller/<id> holds plain text
        };
        from_the_future(&mut value, 0);
        let text = value.to_string();
        if kv.lease != 0 {
            fleet
                .etcd
                .etcdctl(&["put", "--ignore-lease", &kv.key, &text])
                .await
                .unwrap();
        } else {
            let txn = Txn::new().op(Op::put(kv.key.clone(), text));
            fleet.cp.store().txn(txn).await.unwrap();
        }
        let kind = kv.key[root.len()..].trim_start_matches('/');
        kinds.push(kind.split('/').next().unwrap().to_owned());
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// A stored value at `key` (JSON).
async fn stored(fleet: &TestFleet, key: &Key) -> (Value, i64) {
    let v = fleet.cp.read::<Value>(key).await.unwrap().unwrap();
    (v.value, v.mod_revision)
}

async fn put(fleet: &TestFleet, key: &Key, value: &Value) -> i64 {
    let txn = Txn::new().op(Op::put(fleet.cp.key(key), value.to_string()));
    match fleet.cp.store().txn(txn).await.unwrap() {
        TxnOutcome::Applied { revision } => revision,
        TxnOutcome::Refused => panic!("an unconditional put was refused"),
    }
}

/// Waits until `node`'s snapshot is at `revision`.
async fn caught_up(fleet: &TestFleet, metrics_url: &str, revision: i64) {
    eventually!(Duration::from_secs(20), "snapshot caught up", {
        let text = fleet.http.get(metrics_url).send().await.unwrap();
        let text = text.text().await.unwrap();
        metric_sum(&text, CONTROL_SNAPSHOT_REVISION, None) >= revision as f64
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_a_newer_release_are_served_normally() {
    let mut fleet = TestFleet::builder().workers(3).start().await;
    let key = fleet.placed_model("acme", "risk", 2, 17).await;
    let model = ModelKey::parse_shard_key("acme/risk").unwrap();
    let batch = rows(3, 5);
    let before = fleet.infer(0, &key, "risk", &batch).await;
    assert_eq!(before.status, 200, "{:?}", before.body);

    // Workers publish what they loaded at most once a second.
    let resident = format!("{}resident/", fleet.cp.prefix().root());
    eventually!(Duration::from_secs(10), "resident keys published", {
        let listing = fleet.cp.store().list(&resident).await.unwrap();
        !listing.kvs.is_empty()
    });

    // Every kind of key, rewritten by the "newer release".
    let kinds = rewrite_everything(&fleet).await;
    for kind in [
        "assignments",
        "models",
        "placement",
        "resident",
        "tenants",
        "workers",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} key in {kinds:?}"
        );
    }
    // Plus values only a newer release can write: an admin state it added (on a member
    // of the shard) and a version whose activation it added.
    let (assignment, _) = stored(&fleet, &Key::Assignment(model.clone())).await;
    let member = assignment["workers"][0].as_str().unwrap().to_owned();
    let admin = json!({"state": "hibernating", "since": 1, "by": {"who": "ops"}});
    put(&fleet, &Key::WorkerAdmin(member.parse().unwrap()), &admin).await;
    let v1 = Key::ModelVersion(model.clone(), "1".parse().unwrap());
    let (mut v2, _) = stored(&fleet, &v1).await;
    v2["version"] = json!("2");
    v2["config"]["layers"][0]["activation"] = json!("swish");
    v2["config"]["layers"][0]["swish_beta"] = json!(1.5);
    let v2_key = Key::ModelVersion(model.clone(), "2".parse().unwrap());
    let last = put(&fleet, &v2_key, &v2).await;

    caught_up(&fleet, &fleet.routers[0].metrics_url, last).await;
    for w in &fleet.workers {
        caught_up(&fleet, &w.metrics_url, last).await;
    }

    // The version from the future is known (metadata answers), and scoring it is
    // refused by this release's workers with a clear 502, not a 404.
    let url = &fleet.routers[0].url;
    let meta = fleet
        .http
        .get(format!("{url}/v2/models/risk/versions/2"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    let v2_reply = Reply::read(
        fleet
            .http
            .post(format!("{url}/v2/models/risk/versions/2/infer"))
            .bearer_auth(&key)
            .json(&infer_body(&batch))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v2_reply.status, 502, "{:?}", v2_reply.body);
    let message = v2_reply.body["error"].as_str().unwrap();
    assert!(
        message.contains("cannot build") && message.contains("activation"),
        "{message}"
    );

    // The key authenticates, the model scores the same, members of the shard answer.
    let members: Vec<String> = assignment["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    for _ in 0..10 {
        let after = fleet.infer(0, &key, "risk", &batch).await;
        assert_eq!(after.status, 200, "{:?}", after.body);
        assert_eq!(after.scores(), before.scores());
        assert!(
            members.contains(after.worker.as_ref().unwrap()),
            "{members:?}"
        );
    }
    // With the other member gone, the one in the unknown admin state serves alone:
    // it kept its shard and is still routed to.
    let other = members.iter().find(|w| **w != member).unwrap();
    let other = fleet.workers.iter().position(|w| w.id == *other).unwrap();
    fleet.workers[other].kill().await.unwrap();
    for _ in 0..10 {
        let after = fleet.infer(0, &key, "risk", &batch).await;
        assert_eq!(after.status, 200, "{:?}", after.body);
        assert_eq!(after.worker.as_deref(), Some(member.as_str()));
    }

    // Nothing was dropped as invalid; what was ignored is counted on router and workers.
    let router_metrics = fleet.routers[0].metrics_text().await;
    assert_eq!(
        metric_sum(&router_metrics, CONTROL_INVALID_VALUES_TOTAL, None),
        0.0
    );
    for kind in [
        "tenant",
        "model",
        "assignment",
        "placement",
        "worker",
        "worker_admin",
        "resident",
    ] {
        let ignored = metric_sum(
            &router_metrics,
            CONTROL_IGNORED_FIELDS_TOTAL,
            Some(("kind", kind)),
        );
        assert!(ignored >= 1.0, "{kind}: {ignored}");
    }
    for w in fleet
        .workers
        .iter()
        .filter(|w| w.id != fleet.workers[other].id)
    {
        let text = w.metrics_text().await;
        assert_eq!(metric_sum(&text, CONTROL_INVALID_VALUES_TOTAL, None), 0.0);
        assert!(metric_sum(&text, CONTROL_IGNORED_FIELDS_TOTAL, None) >= 6.0);
    }

    // The controller (this release) leaves the worker in the unknown state its shard:
    // two more reconcile passes (it woke on every write above) change nothing.
    let passes = || async {
        let text = fleet.routers[0].metrics_text().await;
        metric_sum(
            &text,
            "shardline_placement_reconcile_duration_seconds_count",
            None,
        )
    };
    let seen = passes().await;
    eventually!(Duration::from_secs(20), "two more reconcile passes", {
        passes().await >= seen + 2.0
    });
    let (now, _) = stored(&fleet, &Key::Assignment(model)).await;
    assert!(
        now["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == member.as_str()),
        "{now}"
    );
}
