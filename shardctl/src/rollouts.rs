//! `shardctl canary`: give a candidate version a share of the requests that name no
//! version, or take it away. The canary lives in the model's live pointer, so setting,
//! clearing and promoting it (`shardctl activate` of its version) are one
//! compare-and-swap each; routers pin each request to the version they chose.

use serde_json::json;
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
    #[arg(long, conflicts_with_all = ["version", "percent", "sticky"])]
    pub clear: bool,
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
        }),
    )
}
