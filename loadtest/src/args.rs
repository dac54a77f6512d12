//! Value parsers for command-line flags, shared by every options struct that derives
//! [`clap::Args`]. A leaf: it imports nothing from the crate, so the benchmarks, the load
//! generator and the command tree can all use it without depending on each other.

use std::time::Duration;

/// A number of seconds (`1.5`) as a [`Duration`]: the value parser of the benchmarks'
/// second-valued flags.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}
