//! What the fleet's callers do through `shardctl`: create tenants, publish models, and
//! record the tenants' keys in `keys.json`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::{FleetState, KEYS_FILE};
use crate::loadgen::keys::TenantKey;

/// Creates `tenant` (with its own shard size, else the placement default) with
/// `shardctl tenant create` and returns its API key.
pub fn create_tenant(
    state: &FleetState,
    tenant: &str,
    shard_size: Option<u32>,
) -> anyhow::Result<String> {
    let mut cmd = state.shardctl();
    cmd.args(["--json", "tenant", "create", tenant]);
    if let Some(k) = shard_size {
        cmd.args(["--shard-size", &k.to_string()]);
    }
    let out = run_shardctl(&mut cmd)?;
    out["api_key"]
        .as_str()
        .map(str::to_owned)
        .context("shardctl tenant create printed no api_key")
}

/// Publishes the model in `dir` (`config.json` + `model.safetensors`) with `shardctl
/// publish` and makes it live.
pub fn publish(
    state: &FleetState,
    tenant: &str,
    model: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut cmd = state.shardctl();
    cmd.args(["--json", "publish", "--tenant", tenant, "--model", model])
        .args(["--version", version, "--store", &state.store_url])
        .arg(dir);
    run_shardctl(&mut cmd).map(drop)
}

/// Writes `keys.json` into the run directory (mode 0600: it holds secrets).
pub fn write_keys(run_dir: &Path, keys: &[TenantKey]) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = run_dir.join(KEYS_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(&serde_json::to_vec_pretty(keys)?)?;
    Ok(path)
}

fn run_shardctl(cmd: &mut Command) -> anyhow::Result<serde_json::Value> {
    let out = cmd.stdin(Stdio::null()).output().context("run shardctl")?;
    if !out.status.success() {
        bail!(
            "shardctl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("shardctl printed invalid json")
}
