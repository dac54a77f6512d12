//! `shardctl canary` and `shardctl shadow`: give a candidate version a share of the
//! requests that name no version (canary), or a copy of a sample of them scored after
//! their answer for comparison (shadow), or take either away. The version is loaded on
//! every member of the model's shard first (as the controller prefetches before a
//! repair), so its first requests find it warm. Both live in the model's live pointer,
//! so setting, clearing and promoting (`shardctl activate` of the canary's version) are
//! one compare-and-swap each; routers pin each request to the version they chose.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use shardline_controller::{HttpPrefetcher, Prefetch};
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::rollout::{Canary, Shadow, format_percent, parse_percent};

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
    #[command(flatten)]
    pub warm: Warm,
}

/// `shardctl shadow`'s flags.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
pub struct ShadowArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub model: String,
    /// The version to compare with the served one (published, not the live one).
    #[arg(long)]
    pub version: Option<String>,
    /// Share of the requests that name no version copied to it: 0 to 100.
    #[arg(long, requires = "version", default_value = "100")]
    pub percent: String,
    /// End the shadow.
    #[arg(long, conflicts_with_all = ["version", "no_prefetch"])]
    pub clear: bool,
    #[command(flatten)]
    pub warm: Warm,
}

/// Loading a version on the shard before it gets traffic.
#[derive(Debug, Clone, clap::Args)]
pub struct Warm {
    /// Write without loading the version on the shard first.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Shared secret presented to workers when prefetching.
    #[arg(long, env = "SHARDLINE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Longest wait for one worker to load the version.
    #[arg(long, value_parser = shardline_shared::units::parse_duration, default_value = "60s")]
    pub prefetch_timeout: Duration,
}

fn model_key(tenant: &str, model: &str) -> Result<ModelKey, CliError> {
    Ok(ModelKey::new(
        parse_id::<TenantId>(tenant)?,
        parse_id::<ModelName>(model)?,
    ))
}

fn percent(p: &str) -> Result<u32, CliError> {
    parse_percent(p).map_err(|e| CliError::Usage(e.to_string()))
}

/// Sets or clears a model's canary.
pub async fn canary(ctx: &Ctx, args: CanaryArgs) -> Result<Output, CliError> {
    let key = model_key(&args.tenant, &args.model)?;
    let canary = match (&args.version, &args.percent) {
        (Some(v), Some(p)) => Some(Canary {
            version: parse_id::<VersionId>(v)?,
            basis_points: percent(p)?,
            sticky: args.sticky,
        }),
        _ => None,
    };
    let prefetched = warm(ctx, &key, canary.as_ref().map(|c| &c.version), &args.warm).await?;
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

/// Sets or clears a model's shadow.
pub async fn shadow(ctx: &Ctx, args: ShadowArgs) -> Result<Output, CliError> {
    let key = model_key(&args.tenant, &args.model)?;
    let shadow = match &args.version {
        Some(v) => Some(Shadow {
            version: parse_id::<VersionId>(v)?,
            basis_points: percent(&args.percent)?,
        }),
        None => None,
    };
    let prefetched = warm(ctx, &key, shadow.as_ref().map(|s| &s.version), &args.warm).await?;
    ctx.cp.set_shadow(&key, shadow.clone()).await?;
    let text = match &shadow {
        Some(s) => format!(
            "{key}: shadow version {} scores {} % of unpinned requests after their answer; \
             see shardline_router_shadow_* on the routers",
            s.version,
            format_percent(s.basis_points)
        ),
        None => format!("{key}: no shadow"),
    };
    Output::new(
        text,
        &json!({
            "tenant": key.tenant,
            "model": key.model,
            "shadow": shadow.as_ref().map(|s| json!({
                "version": s.version,
                "percent": f64::from(s.basis_points) / 100.0,
            })),
            "prefetched": prefetched,
        }),
    )
}

/// Loads `version` (when one is being set) on the shard unless `--no-prefetch`.
async fn warm(
    ctx: &Ctx,
    key: &ModelKey,
    version: Option<&VersionId>,
    flags: &Warm,
) -> Result<Vec<String>, CliError> {
    let Some(version) = version.filter(|_| !flags.no_prefetch) else {
        return Ok(Vec::new());
    };
    let Some(token) = flags.internal_token.clone().filter(|t| t.len() >= 16) else {
        return Err(CliError::Usage(
            "the version is loaded on the shard first: give --internal-token (or SHARDLINE_INTERNAL_TOKEN), at least 16 characters, or --no-prefetch".into(),
        ));
    };
    prefetch(ctx, key, version, token, flags.prefetch_timeout).await
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
    // The members requests go to now (a model not yet placed is served by the top k).
    let members: Vec<(String, String)> = snap
        .serving_members(key)
        .into_iter()
        .filter(|(_, replaced)| !replaced)
        .filter_map(|(w, _)| {
            let address = snap.workers().get(w)?.value.address.clone();
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
