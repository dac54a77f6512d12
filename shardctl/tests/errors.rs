//! `shardctl`'s errors: one line on stderr, distinct exit codes, and `--json` errors.
#![allow(clippy::unwrap_used)]

use shardline_testkit::fleet::ctl::{ctl_at, write_model};

#[tokio::test]
async fn errors_are_one_line_with_distinct_exit_codes() {
    let run = ctl_at("http://127.0.0.1:1", None, &["workers"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("shardctl: etcd unreachable at http://127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let json = ctl_at("http://127.0.0.1:1", None, &["tenants", "--json"]).await;
    assert_eq!(json.json()["exit_code"], 1);

    let usage = ctl_at("http://127.0.0.1:1", None, &["tenant", "create"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    let cmd_run = ctl_at(
        "http://127.0.0.1:1",
        None,
        &["rebalance", "--apply", "--internal-token", "short"],
    )
    .await;
    assert_eq!(cmd_run.code, 2, "{cmd_run:?}");
    assert!(
        cmd_run.stderr.contains("--internal-token"),
        "{}",
        cmd_run.stderr
    );
    let help = ctl_at("http://127.0.0.1:1", None, &["publish", "--help"]).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Example"), "{}", help.stdout);

    // A malformed model is refused before etcd is even contacted.
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), b"{\"format\": \"shardline/v1\"}", b"");
    let run = ctl_at(
        "http://127.0.0.1:1",
        None,
        &[
            "publish",
            "--tenant",
            "a",
            "--model",
            "m",
            "--version",
            "1",
            "--store",
            "file:///tmp",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("shardctl: config.json is not valid"),
        "{}",
        run.stderr
    );
}
