//! Which model a request names: the manifest of the tenant's model at the requested
//! version, or its live version (or, for an inference, its canary's share of them). Another tenant's model answers exactly like a missing
//! one (404), since the lookup only ever looks under the caller's own tenant.

use shardline_shared::echo::Echo;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

use crate::error::RouterError;

/// How an inference naming no version chooses between live and canary.
#[derive(Debug, Clone, Copy)]
pub struct Unpinned<'a> {
    /// The request's `x-shardline-route-key`.
    pub route_key: Option<&'a [u8]>,
    /// A uniformly random number.
    pub draw: u64,
}

/// The manifest of `tenant`'s model `name` at `version`, else the live one — or, when
/// `unpinned` is given (an inference), the canary's if the canary takes the request.
/// A canary whose version is unknown here takes nothing.
pub fn resolve<'s>(
    snap: &'s Snapshot,
    tenant: &TenantId,
    name: &str,
    version: Option<&str>,
    unpinned: Option<Unpinned<'_>>,
) -> Result<(ModelKey, &'s Manifest), RouterError> {
    // Names come from the path: echoed bounded (a path may be 64 KiB long).
    let shown = Echo(name);
    let unknown = || RouterError::NotFound(format!("model {shown} not found"));
    let model = ModelName::new(name).map_err(|_| unknown())?;
    let key = ModelKey::new(tenant.clone(), model);
    let entry = snap.model(&key).ok_or_else(unknown)?;
    let manifest = match version {
        Some(v) => {
            let no_version =
                || RouterError::NotFound(format!("model {shown} has no version {}", Echo(v)));
            let v = VersionId::new(v).map_err(|_| no_version())?;
            entry
                .versions
                .get(&v)
                .map(|m| &m.value)
                .ok_or_else(no_version)?
        }
        None => {
            let canary = entry.live.as_ref().and_then(|l| l.value.canary.as_deref());
            let chosen = canary
                .zip(unpinned)
                .filter(|(c, u)| c.takes(&key, u.route_key, u.draw))
                .and_then(|(c, _)| entry.versions.get(&c.version));
            match chosen {
                Some(m) => &m.value,
                None => entry.live_manifest().ok_or_else(|| {
                    RouterError::NotFound(format!("model {shown} has no live version"))
                })?,
            }
        }
    };
    Ok((key, manifest))
}
