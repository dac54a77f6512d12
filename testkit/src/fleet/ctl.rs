//! Running `shardctl` as a real process against a [`TestFleet`]: exit status, stdout
//! and stderr of each run, `--json` parsed, and model directories to publish.

#![allow(
    clippy::unwrap_used,
    reason = "a set-up step that fails fails the test"
)]

use std::path::Path;

use super::{DIM, TestFleet};
use crate::TOKEN;
use crate::models::MlpArtifact;
use serde_json::Value;
use shardline_shared::keys::Section;

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `shardctl --etcd <fleet's etcd> ARGS` with the fleet's store settings.
pub async fn ctl_at(etcd: &str, fleet: Option<&TestFleet>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(crate::binary("shardctl"));
    cmd.arg("--etcd").arg(etcd).args(args);
    for var in ["SHARDLINE_JSON", "SHARDLINE_PREFIX", "SHARDLINE_STORE"] {
        cmd.env_remove(var);
    }
    cmd.env("SHARDLINE_INTERNAL_TOKEN", TOKEN);
    if let Some(f) = fleet {
        cmd.env("SHARDLINE_STORE", &f.store_url);
        for (k, v) in &f.store_env {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn ctl(fleet: &TestFleet, args: &[&str]) -> Run {
    ctl_at(&fleet.etcd.endpoint(), Some(fleet), args).await
}

/// Runs with `--json`, expects exit 0, returns the parsed output.
pub async fn ctl_json(fleet: &TestFleet, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = ctl(fleet, &all).await;
    assert_eq!(run.code, 0, "shardctl {args:?} failed: {}", run.stderr);
    run.json()
}

/// Writes a `64 → 16 → 1` model directory.
pub fn model_dir(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = MlpArtifact::random(&[DIM, 16, 1], seed);
    write_model(dir.path(), &m.config_json, &m.weights);
    dir
}

pub fn write_model(dir: &Path, config: &[u8], weights: &[u8]) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
}

/// Every key and `mod_revision` under one section of the fleet's prefix: compared
/// before and after a refused command, it proves nothing was written.
pub async fn section_revisions(fleet: &TestFleet, section: Section) -> Vec<(String, i64)> {
    let listing = fleet
        .cp
        .store()
        .list(&fleet.cp.prefix().section(section))
        .await
        .unwrap();
    listing
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect()
}

/// Runs each refused command `(args, exit status, text its message must hold)` and
/// checks it exits so with one line on stderr.
pub async fn assert_refusals(fleet: &TestFleet, cases: &[(Vec<&str>, i32, &str)]) {
    for (args, code, needle) in cases {
        let run = ctl(fleet, args).await;
        assert_eq!(run.code, *code, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}
