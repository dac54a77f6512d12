//! Where the workspace's binaries (`router`, `worker`, `shardctl`) are for a test or a
//! tool: `$SHARDLINE_BIN_DIR` when set, otherwise beside the running executable (a tool
//! in `target/<profile>/`) or one folder up (a test in `target/<profile>/deps/`), so any
//! `CARGO_TARGET_DIR` works.

use std::path::PathBuf;

/// Overrides the folder the binaries are taken from.
pub const BIN_DIR_ENV: &str = "SHARDLINE_BIN_DIR";

/// The folders searched for a binary, in order.
pub fn bin_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return vec![PathBuf::from(dir)];
    }
    let Ok(exe) = std::env::current_exe() else {
        return vec![];
    };
    exe.ancestors().skip(1).take(2).map(PathBuf::from).collect()
}

/// The path of the workspace binary `name`, or why it is not there (and how to build it).
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = bin_dirs();
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the `{name}` binary is not in {dirs:?}: build it first (`cargo build --bins`; \
                 `just test` does), or point {BIN_DIR_ENV} at it"
            )
        })
}

/// The path of the workspace binary `name`; panics, saying how to build it, if absent.
pub fn binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|e| panic!("{e}"))
}
