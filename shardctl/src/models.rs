//! `shardctl activate | rollback | unpublish`: switch the live version of a model or
//! remove one that is not live. Routers pin each request to the version they resolved,
//! so a switch never mixes versions within a request; it takes effect on every router
//! as soon as its snapshot has the change.

use serde_json::json;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::snapshot::ModelEntry;

use super::context::{Ctx, Output, parse_id};
use super::error::CliError;

fn model_key(tenant: &str, model: &str) -> Result<ModelKey, CliError> {
    Ok(ModelKey::new(
        parse_id::<TenantId>(tenant)?,
        parse_id::<ModelName>(model)?,
    ))
}

/// Makes `version` live.
pub async fn activate(
    ctx: &Ctx,
    tenant: &str,
    model: &str,
    version: &str,
) -> Result<Output, CliError> {
    let key = model_key(tenant, model)?;
    let version: VersionId = parse_id(version)?;
    let snap = ctx.snapshot().await?;
    let before = snap
        .model(&key)
        .and_then(|e| e.live.as_ref())
        .map(|l| l.value.version.clone());
    switch(ctx, &key, before, &version).await
}

/// Makes `to`, or the version published before the live one, live again.
pub async fn rollback(
    ctx: &Ctx,
    tenant: &str,
    model: &str,
    to: Option<&str>,
) -> Result<Output, CliError> {
    let key = model_key(tenant, model)?;
    let to: Option<VersionId> = to.map(parse_id).transpose()?;
    let snap = ctx.snapshot().await?;
    let entry = snap
        .model(&key)
        .ok_or_else(|| CliError::failed(format!("model {key} does not exist")))?;
    let live = entry
        .live
        .as_ref()
        .map(|l| l.value.version.clone())
        .ok_or_else(|| CliError::failed(format!("model {key} has no live version")))?;
    let target = match to {
        Some(v) => v,
        None => previous_version(entry, &live).ok_or_else(|| {
            CliError::failed(format!(
                "model {key} has no version published before {live}; name one with --to"
            ))
        })?,
    };
    switch(ctx, &key, Some(live), &target).await
}

/// The version published last before `live` (by publication time, then name).
pub fn previous_version(entry: &ModelEntry, live: &VersionId) -> Option<VersionId> {
    let order = |v: &VersionId| {
        entry
            .versions
            .get(v)
            .map(|m| (m.value.published_at, v.clone()))
    };
    let current = order(live)?;
    entry
        .versions
        .keys()
        .filter_map(order)
        .filter(|o| *o < current)
        .max()
        .map(|(_, v)| v)
}

async fn switch(
    ctx: &Ctx,
    key: &ModelKey,
    before: Option<VersionId>,
    version: &VersionId,
) -> Result<Output, CliError> {
    ctx.cp.set_live(key, version).await?;
    let text = match &before {
        Some(b) if b == version => format!("{key}: {version} was already live"),
        Some(b) => format!("{key}: live version {b} -> {version}"),
        None => format!("{key}: live version {version}"),
    };
    Output::new(
        text,
        &json!({
            "tenant": key.tenant,
            "model": key.model,
            "live": version,
            "previous": before,
        }),
    )
}

/// Removes a version that is not live from the registry.
pub async fn unpublish(
    ctx: &Ctx,
    tenant: &str,
    model: &str,
    version: &str,
) -> Result<Output, CliError> {
    let key = model_key(tenant, model)?;
    let version: VersionId = parse_id(version)?;
    ctx.cp.unpublish(&key, &version).await?;
    Output::new(
        format!("{key}: version {version} unpublished (its objects stay in the store)"),
        &json!({"tenant": key.tenant, "model": key.model, "version": version, "unpublished": true}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::World;

    #[test]
    fn rollback_goes_to_the_version_published_before_the_live_one() {
        let snap = World::new()
            .version("acme", "risk", "1", 10)
            .version("acme", "risk", "2", 20)
            .version("acme", "risk", "10", 30)
            .live("acme", "risk", "10")
            .snapshot();
        let key = ModelKey::parse_shard_key("acme/risk").unwrap();
        let entry = snap.model(&key).unwrap();
        let v = |s: &str| VersionId::new(s).unwrap();
        assert_eq!(previous_version(entry, &v("10")), Some(v("2")));
        assert_eq!(previous_version(entry, &v("2")), Some(v("1")));
        assert_eq!(previous_version(entry, &v("1")), None);
    }
}
