//! `shardctl tenant create | rotate-key | delete`. A new key is printed once and never
//! stored: etcd keeps only its digest.

use serde_json::json;
use shardline_shared::ids::TenantId;
use shardline_shared::records::TenantLimits;

use super::TenantCommand;
use super::context::{Ctx, Output, parse_id};
use super::error::CliError;

/// Runs a tenant subcommand.
pub async fn run(ctx: &Ctx, cmd: TenantCommand) -> Result<Output, CliError> {
    match cmd {
        TenantCommand::Create {
            name,
            shard_size,
            rate,
            max_in_flight,
        } => {
            let tenant: TenantId = parse_id(&name)?;
            if let Some(k) = shard_size.filter(|k| !(1..=64).contains(k)) {
                return Err(CliError::Usage(format!(
                    "--shard-size must be between 1 and 64, got {k}"
                )));
            }
            let limits = TenantLimits {
                max_in_flight,
                rate_per_sec: rate,
            };
            let key = ctx.cp.create_tenant(&tenant, shard_size, limits).await?;
            let text = format!(
                "created tenant {tenant}\napi key (shown once, store it now): {}",
                key.expose()
            );
            Output::new(
                text,
                &json!({
                    "tenant": tenant,
                    "api_key": key.expose(),
                    "shard_size": shard_size,
                    "max_in_flight": max_in_flight,
                    "rate_per_sec": rate,
                }),
            )
        }
        TenantCommand::RotateKey { name } => {
            let tenant: TenantId = parse_id(&name)?;
            let key = ctx.cp.rotate_key(&tenant).await?;
            let text = format!(
                "rotated the key of {tenant}; old keys stop working within seconds\n\
                 api key (shown once, store it now): {}",
                key.expose()
            );
            Output::new(text, &json!({"tenant": tenant, "api_key": key.expose()}))
        }
        TenantCommand::Delete { name, force } => {
            let tenant: TenantId = parse_id(&name)?;
            ctx.cp.delete_tenant(&tenant, force).await?;
            Output::new(
                format!("deleted tenant {tenant}"),
                &json!({"tenant": tenant, "deleted": true}),
            )
        }
    }
}
