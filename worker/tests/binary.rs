//! The `worker` binary's command line: help, and exit status 64 with a one-line reason
//! on bad flags or configuration.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .env_remove("SHARDLINE_ETCD")
        .env_remove("SHARDLINE_STORE")
        .output()
        .unwrap()
}

const GOOD: &[&str] = &[
    "--etcd",
    "http://127.0.0.1:1",
    "--memory-budget",
    "1GiB",
    "--internal-token",
    "0123456789abcdef",
    "--id",
    "w-1",
];

#[test]
fn help_lists_the_contract_flags() {
    let out = worker(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--etcd",
        "--store",
        "--memory-budget",
        "--idle-ttl",
        "--id",
        "--advertise",
        "--metrics-listen",
        "--internal-token",
        "SHARDLINE_ETCD",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--store", "file:///tmp", "--memory-budget", "lots"],
            "lots",
        ),
        (vec!["--store", "ftp://x"], "--store"),
        (vec!["--store", "file:///definitely/not/here"], "--store"),
        (
            vec!["--store", "file:///tmp", "--listen", "0.0.0.0:9"],
            "--advertise",
        ),
        (
            vec!["--store", "file:///tmp", "--prefix", "rel"],
            "--prefix",
        ),
    ];
    for (extra, needle) in cases {
        let mut args: Vec<&str> = GOOD.to_vec();
        for pair in extra.chunks(2) {
            if let Some(i) = args.iter().position(|a| *a == pair[0]) {
                args[i + 1] = pair[1];
            } else {
                args.extend_from_slice(pair);
            }
        }
        let out = worker(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}
