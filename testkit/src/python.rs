//! Python scripts run by tests (standard clients such as `tritonclient` and KServe's SDK
//! against real routers and workers): the test venv's interpreter, and one script run
//! with JSON in on stdin and JSON out on stdout.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::process::venv_program;

/// Overrides the Python interpreter.
pub const PYTHON_ENV: &str = "SHARDLINE_PYTHON";

/// The interpreter: `$SHARDLINE_PYTHON`, else the workspace's `.venv/bin/python` (made
/// by `just venv`, with the clients `loadtest/requirements.txt` pins), else `python3`
/// on `PATH`.
pub fn find_python() -> anyhow::Result<PathBuf> {
    venv_program(PYTHON_ENV, "python", "python3")?.with_context(|| {
        format!("python not found: run `just venv` in the workspace root (or set {PYTHON_ENV})")
    })
}

/// Runs `script` (blocking: call it from `spawn_blocking` in async tests) with `input`
/// on its stdin and returns what it printed on stdout as JSON; fails with its stderr
/// when it exits non-zero.
pub fn run_python(script: &Path, input: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let python = find_python()?;
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {} {}", python.display(), script.display()))?;
    let mut stdin = child.stdin.take().context("script stdin")?;
    stdin.write_all(input.to_string().as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} exited with {}:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} printed no JSON: {}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
