//! `shardctl` against an etcd out of space (its NOSPACE alarm raised): routers keep
//! serving from their snapshot, writers fail with one line saying what to do and exit 1,
//! and nothing is half-written.
#![allow(clippy::unwrap_used)]

use shardline_control::StoreError;
use shardline_control::store::{Op, Txn};
use shardline_testkit::fleet::ctl::{ctl, model_dir};
use shardline_testkit::fleet::{TestFleet, rows};

/// etcd's database quota in this test: room for a fleet, filled in a few dozen writes.
const QUOTA: usize = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_cleanly_on_a_full_etcd_while_routers_keep_serving() {
    let fleet = TestFleet::builder()
        .workers(1)
        .routers(1)
        .s3()
        .etcd_arg(&format!("--quota-backend-bytes={QUOTA}"))
        .start()
        .await;
    let key = fleet.placed_model("acme", "risk", 1, 7).await;

    // Fill etcd (outside Shardline's prefix) until it raises the alarm.
    let store = fleet.cp.store();
    let junk = vec![b'x'; 256 << 10];
    let mut full = false;
    for i in 0..400 {
        match store
            .txn(Txn::new().op(Op::put(format!("/junk/{i}"), junk.clone())))
            .await
        {
            Ok(_) => {}
            Err(StoreError::NoSpace { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error while filling etcd: {e}"),
        }
    }
    assert!(full, "etcd never raised NOSPACE");
    let root = fleet.cp.prefix().root().to_owned();
    let before = store.list(&root).await.unwrap();

    let dir = model_dir(2);
    let publish = [
        "publish",
        "--tenant",
        "acme",
        "--model",
        "risk",
        "--version",
        "2",
        dir.path().to_str().unwrap(),
    ];
    for args in [&publish[..], &["tenant", "create", "beta"][..]] {
        let run = ctl(&fleet, args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("shardctl: etcd is out of space")
                && line.contains("etcdctl alarm disarm")
                && line.contains("--quota-backend-bytes"),
            "{line}"
        );
    }
    // Nothing half-written: the control plane is exactly as it was (no version 2, no
    // live pointer moved, no tenant).
    let after = store.list(&root).await.unwrap();
    assert_eq!(after.kvs, before.kvs);
    // The router keeps serving from its snapshot.
    let reply = fleet.infer(0, &key, "risk", &rows(2, 1)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["model_version"], "1");
}
