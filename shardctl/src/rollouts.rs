//! `shardctl canary`: give a candidate version a share of the requests that name no
//! version, or take it away. The canary's version is loaded on every member of the
//! model's shard first (as the controller prefetches before a repair), so its first
//! requests find it warm. The canary lives in the model's live pointer, so setting,
//! clearing and promoting it (`shardctl activate` of its version) are one
//! compare-and-swap each; routers pin each request to the version they chose.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use shardline_controller::{HttpPrefetcher, Prefetch};
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::rollout::{Canary, format_percent, parse_percent};

use super::context::{Ctx, Output, parse_id};
use super::error::CliError;

/// `shardctl canary`'s flags.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
pub struct CanaryArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub model: String,
    /// The candidate version (published, not the live one).
    #[arg(long, requires = "percent")]
    pub version: Option<String>,
    /// Its share of the requests that name no version: 0 to 100, at most two decimals.
    #[arg(long, requires = "version")]
    pub percent: Option<String>,
    /// Requests with the same `x-shardline-route-key` always get the same version.
    #[arg(long, requires = "version")]
    pub sticky: bool,
    /// End the canary: every unpinned request goes to the live version.
    #[arg(long, conflicts_with_all = ["version", "percent", "sticky", "no_prefetch"])]
    pub clear: bool,
    /// Write the canary without loading its version on the shard first.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Shared secret presented to workers when prefetching.
    #[arg(long, env = "SHARDLINE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Longest wait for one worker to load the canary's version.
    #[arg(long, value_parser = shardline_shared::units::parse_duration, default_value = "60s")]
    pub prefetch_timeout: Duration,
}

/// Sets or clears a model's canary.
pub async fn canary(ctx: &Ctx, args: CanaryArgs) -> Result<Output, CliError> {
    let key = ModelKey::new(
        parse_id::<TenantId>(&args.tenant)?,
        parse_id::<ModelName>(&args.model)?,
    );
    let canary = match (&args.version, &args.percent) {
        (Some(v), Some(p)) => Some(Canary {
            version: parse_id::<VersionId>(v)?,
            basis_points: parse_percent(p).map_err(|e| CliError::Usage(e.to_string()))?,
            sticky: args.sticky,
        }),
        _ => None,
    };
    let token = match (&canary, &args.internal_token) {
        (Some(_), _) if args.no_prefetch => None,
        (Some(_), Some(t)) if t.len() >= 16 => Some(t.clone()),
        (Some(_), _) => {
            return Err(CliError::Usage(
                "a canary is prefetched first: give --internal-token (or SHARDLINE_INTERNAL_TOKEN), at least 16 characters, or --no-prefetch".into(),
            ));
        }
        (None, _) => None,
    };
    let mut prefetched = Vec::new();
    if let (Some(c), Some(token)) = (&canary, token) {
        prefetched = prefetch(ctx, &key, &c.version, token, args.prefetch_timeout).await?;
    }
    ctx.cp.set_canary(&key, canary.clone()).await?;
    let text = match &canary {
        Some(c) => format!(
            "{key}: canary version {} takes {} % of unpinned requests{}",
            c.version,
            format_percent(c.basis_points),
            if c.sticky {
                " (sticky by route key)"
            } else {
                ""
            }
        ),
        None => format!("{key}: no canary; unpinned requests go to the live version"),
    };
    Output::new(
        text,
        &json!({
            "tenant": key.tenant,
            "model": key.model,
            "canary": canary.as_ref().map(|c| json!({
                "version": c.version,
                "percent": c.basis_points as f64 / 100.0,
                "sticky": c.sticky,
            })),
            "prefetched": prefetched,
        }),
    )
}

/// Loads `version` on every live member of `key`'s shard, all at once; the first
/// failure is the command's (nothing is written then). Returns the members loaded.
async fn prefetch(
    ctx: &Ctx,
    key: &ModelKey,
    version: &VersionId,
    token: String,
    timeout: Duration,
) -> Result<Vec<String>, CliError> {
    let snap = ctx.snapshot().await?;
    if snap.manifest(key, version).is_none() {
        return Err(CliError::failed(format!(
            "model {key} has no version {version}"
        )));
    }
    let members: Vec<(String, String)> = snap
        .assignments()
        .get(key)
        .map(|a| a.value.workers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|w| {
            let address = snap.workers().get(&w)?.value.address.clone();
            Some((w.to_string(), address))
        })
        .collect();
    let prefetcher = HttpPrefetcher::new(token, timeout);
    let loads = members.iter().map(|(w, address)| {
        let prefetcher = &prefetcher;
        async move { (w, prefetcher.prefetch(address, key, version).await) }
    });
    let mut loaded = Vec::new();
    for (worker, result) in join_all(loads).await {
        result.map_err(|e| {
            CliError::failed(format!(
                "loading version {version} of {key} on {worker}: {e}; nothing written (--no-prefetch skips this)"
            ))
        })?;
        loaded.push(worker.clone());
    }
    Ok(loaded)
}
