//! `shardctl rebalance` onto new workers and `drain` under load, on a real fleet: the
//! planned moves, concurrent applies, prefetch before every swap, and slot loads.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shardline_shared::keys::{Prefix, Section};
use shardline_testkit::fleet::ctl::{ctl, ctl_json};
use shardline_testkit::fleet::{TestFleet, steady_load};
use shardline_testkit::wait::eventually;

/// Live members of every assignment, from `assignments --json`.
async fn shards(fleet: &TestFleet) -> Vec<(String, Vec<String>, Vec<String>)> {
    let v = ctl_json(fleet, &["assignments"]).await;
    let names = |x: &Value| -> Vec<String> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    };
    v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = format!(
                "{}/{}",
                a["tenant"].as_str().unwrap(),
                a["model"].as_str().unwrap()
            );
            (name, names(&a["workers"]), names(&a["previous"]))
        })
        .collect()
}

/// Waits until there are `n` assignments of `k` members each and no `previous`.
/// Every value written to an assignment key since `before` (a listing), as epochs per
/// key in commit order, starting with the epoch the listing held.
async fn assignment_history(
    fleet: &TestFleet,
    before: shardline_control::store::Listing,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    use futures::StreamExt as _;
    use shardline_control::store::{Event, WatchItem};
    let epoch = |v: &[u8]| {
        serde_json::from_slice::<Value>(v).unwrap()["epoch"]
            .as_u64()
            .unwrap()
    };
    let mut history: std::collections::BTreeMap<String, Vec<u64>> = before
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), vec![epoch(&kv.value)]))
        .collect();
    let prefix = Prefix::default().section(Section::Assignments);
    let end = fleet.cp.store().list(&prefix).await.unwrap().revision;
    let mut stream = fleet
        .cp
        .store()
        .watch(&prefix, before.revision + 1)
        .await
        .unwrap();
    let mut changed = std::collections::BTreeSet::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        let WatchItem::Batch { events, .. } = item.unwrap() else {
            panic!("history compacted");
        };
        // The first batch may be the watch's creation notice (no events): stop only once
        // the event that brought the store to `end` has been seen.
        let mut reached = end <= before.revision;
        for event in events {
            reached |= event.mod_revision() >= end;
            match event {
                Event::Put(kv) => {
                    changed.insert(kv.key.clone());
                    history
                        .entry(kv.key.clone())
                        .or_default()
                        .push(epoch(&kv.value));
                }
                Event::Delete { key, .. } => {
                    history.remove(&key);
                }
            }
        }
        if reached {
            break;
        }
    }
    history.retain(|k, _| changed.contains(k));
    history
}

async fn wait_settled(fleet: &TestFleet, n: usize, k: usize) {
    eventually("settled", Duration::from_secs(20), || async {
        let all = shards(fleet).await;
        if all.len() == n && all.iter().all(|(_, w, p)| w.len() == k && p.is_empty()) {
            Ok(())
        } else {
            Err(all)
        }
    })
    .await;
}

/// Slot load of `worker` from `workers --json`.
async fn slots(fleet: &TestFleet, worker: &str) -> (u64, u64) {
    let v = ctl_json(fleet, &["workers"]).await;
    let row = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == worker);
    row.map_or((0, 0), |r| {
        (
            r["slots"].as_u64().unwrap(),
            r["previous_slots"].as_u64().unwrap(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_onto_new_workers_then_drain_under_load() {
    // Balancing left to the operator: the controller would otherwise move shards onto
    // the new workers on its own, under the plans this test inspects.
    let mut fleet = TestFleet::builder()
        .workers(4)
        .routers(1)
        .router_arg("--max-balance-moves-per-minute=0")
        .start()
        .await;
    let mut targets = vec![];
    for t in 0..3 {
        let tenant = format!("t{t}");
        let key = fleet.tenant(&tenant, Some(2)).await;
        for m in 0..4 {
            fleet
                .publish(&tenant, &format!("m{m}"), "1", t * 4 + m)
                .await;
            targets.push((key.clone(), format!("m{m}")));
        }
    }
    wait_settled(&fleet, 12, 2).await;

    // A fifth worker: the plan moves shards onto it only, and --apply balances it.
    fleet.add_worker().await;
    let plan = ctl_json(&fleet, &["rebalance"]).await;
    let changes = plan["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{plan}");
    for c in changes {
        assert_eq!(c["added"], serde_json::json!(["w-4"]), "{c}");
        assert_eq!(c["removed"].as_array().unwrap().len(), 1, "{c}");
    }
    assert!(plan["applied"].is_null());
    let text = ctl(&fleet, &["rebalance"]).await;
    assert!(
        text.stdout.contains(" +w-4\n") && text.stdout.contains("dry run"),
        "{}",
        text.stdout
    );
    let applied = ctl_json(&fleet, &["rebalance", "--apply"]).await;
    assert_eq!(
        applied["applied"]["swapped"].as_u64().unwrap() as usize,
        changes.len(),
        "{applied}"
    );
    let cap = ctl_json(&fleet, &["blast-radius"]).await["load"]["cap"]
        .as_u64()
        .unwrap();
    let (on_new, _) = slots(&fleet, "w-4").await;
    assert!(
        on_new > 0 && on_new <= cap,
        "w-4 holds {on_new} slots, cap {cap}"
    );
    let again = ctl_json(&fleet, &["rebalance"]).await;
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    wait_settled(&fleet, 12, 2).await;

    // A sixth worker and two operators applying at once: CAS lets no update be lost.
    fleet.add_worker().await;
    let before = fleet
        .cp
        .store()
        .list(&Prefix::default().section(Section::Assignments))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        ctl(&fleet, &["rebalance", "--apply", "--json"]),
        ctl(&fleet, &["rebalance", "--apply", "--json"])
    );
    for run in [&a, &b] {
        assert!(run.code == 0 || run.code == 3, "{run:?}");
        if run.code == 3 {
            assert!(
                run.stderr.contains("conflict") && run.stderr.contains("re-run"),
                "{run:?}"
            );
            assert_eq!(run.json()["exit_code"], 3);
        }
    }
    // No lost update: every write of an assignment sets `epoch` to the epoch it read
    // plus one, so in etcd's history of each key the epochs must rise by exactly one per
    // write. Two writers that both read epoch e and both committed would show e + 1 twice.
    let writes = assignment_history(&fleet, before).await;
    assert!(!writes.is_empty(), "the applies wrote something");
    for (key, epochs) in &writes {
        for pair in epochs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{key}: epochs {epochs:?}: an update was lost"
            );
        }
    }
    // Whatever the interleaving, what was committed is intact and a re-run converges.
    wait_settled(&fleet, 12, 2).await;
    let rerun = ctl_json(&fleet, &["rebalance", "--apply"]).await;
    assert!(
        rerun["changes"].as_array().unwrap().len() <= changes.len(),
        "{rerun}"
    );
    wait_settled(&fleet, 12, 2).await;
    let last = ctl_json(&fleet, &["rebalance"]).await;
    assert_eq!(last["changes"], serde_json::json!([]), "{last}");
    for (name, workers, _) in shards(&fleet).await {
        assert_eq!(
            workers.iter().collect::<BTreeSet<_>>().len(),
            2,
            "{name}: {workers:?}"
        );
    }
    let blast = ctl_json(&fleet, &["blast-radius"]).await;
    assert!(blast["load"]["max"].as_u64().unwrap() <= blast["load"]["cap"].as_u64().unwrap());

    // Cordon and uncordon.
    let c = ctl_json(&fleet, &["cordon", "w-1"]).await;
    assert_eq!(c["state"], "cordoned");
    let w = ctl_json(&fleet, &["workers"]).await;
    assert!(
        w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "w-1" && r["state"] == "cordoned")
    );
    assert_eq!(
        ctl_json(&fleet, &["uncordon", "w-1"]).await["state"],
        "active"
    );

    // Drain w-0 under load: no failed request, and it ends with nothing.
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        targets,
        30,
        Duration::from_secs(6),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = slots(&fleet, "w-0").await.0;
    assert!(before > 0);
    let drained = ctl_json(&fleet, &["drain", "w-0", "--timeout", "60s"]).await;
    assert_eq!(drained["drained"], true, "{drained}");
    assert_eq!(slots(&fleet, "w-0").await, (0, 0));
    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(
        shards(&fleet)
            .await
            .iter()
            .all(|(_, w, p)| !w.contains(&"w-0".into()) && !p.contains(&"w-0".into()))
    );
    let no_wait = ctl_json(&fleet, &["drain", "w-0", "--no-wait"]).await;
    assert_eq!(no_wait["shards"], 0);
}
