//! One key's value parsed into what the snapshot keeps, before it is put anywhere: the
//! part shared by applying an event ([`super::Snapshot::apply`]) and building from a
//! listing ([`super::Listing`]).

use serde::de::DeserializeOwned;

use super::{Versioned, compact};
use crate::compat::{self, Evolving, Ignored};
use crate::ids::{ModelKey, TenantId, VersionId, WorkerId};
use crate::keys::Key;
use crate::manifest::Manifest;
use crate::records::{
    Assignment, LiveVersion, PlacementConfig, ResidentRecord, TenantRecord, WorkerAdmin,
    WorkerRecord,
};

/// A parsed, trimmed and interned value with the names from its key.
pub(super) enum Entry {
    Worker(WorkerId, Versioned<WorkerRecord>),
    Resident(WorkerId, ModelKey, VersionId, u64),
    WorkerAdmin(WorkerId, Versioned<WorkerAdmin>),
    Tenant(TenantId, Versioned<TenantRecord>),
    Live(ModelKey, Versioned<LiveVersion>),
    Manifest(ModelKey, VersionId, Versioned<Manifest>),
    Assignment(ModelKey, Versioned<Assignment>),
    Placement(Versioned<PlacementConfig>),
    Controller(String, Versioned<String>),
}

impl Entry {
    /// Parses the value of `key` (whose names are already interned). Fields and enum
    /// values a newer release added are returned, not refused.
    pub(super) fn parse(key: &Key, value: &[u8], rev: i64) -> Result<(Self, Ignored), String> {
        let mut ignored = Ignored::default();
        let note = &mut ignored;
        let entry = match key {
            Key::Worker(id) => Self::Worker(id.clone(), parse(value, rev, note)?),
            Key::Resident(w, m, ver) => {
                let v = parse::<ResidentRecord>(value, rev, note)?;
                Self::Resident(w.clone(), m.clone(), ver.clone(), v.value.bytes)
            }
            Key::WorkerAdmin(id) => Self::WorkerAdmin(id.clone(), parse(value, rev, note)?),
            Key::Tenant(id) => {
                let mut v = parse::<TenantRecord>(value, rev, note)?;
                compact::tenant(&mut v.value);
                Self::Tenant(id.clone(), v)
            }
            Key::LiveVersion(m) => {
                let mut v = parse::<LiveVersion>(value, rev, note)?;
                v.value.version = v.value.version.interned();
                Self::Live(m.clone(), v)
            }
            Key::ModelVersion(m, ver) => {
                let mut v = parse::<Manifest>(value, rev, note)?;
                if v.value.key() != *m || v.value.version != *ver {
                    return Err("manifest names a different tenant, model or version".into());
                }
                // The key's names, already interned.
                v.value.tenant = m.tenant.clone();
                v.value.model = m.model.clone();
                v.value.version = ver.clone();
                compact::manifest(&mut v.value);
                v.value.validate().map_err(|e| e.to_string())?;
                Self::Manifest(m.clone(), ver.clone(), v)
            }
            Key::Assignment(m) => {
                let mut v = parse::<Assignment>(value, rev, note)?;
                compact::assignment(&mut v.value);
                Self::Assignment(m.clone(), v)
            }
            Key::Placement => {
                let v = parse::<PlacementConfig>(value, rev, note)?;
                v.value.validate()?;
                Self::Placement(v)
            }
            Key::Controller(c) => {
                let text = String::from_utf8(value.to_vec()).map_err(|e| e.to_string())?;
                Self::Controller(
                    c.clone(),
                    Versioned {
                        value: text,
                        mod_revision: rev,
                    },
                )
            }
        };
        Ok((entry, ignored))
    }
}

fn parse<T: DeserializeOwned + Evolving>(
    value: &[u8],
    mod_revision: i64,
    note: &mut Ignored,
) -> Result<Versioned<T>, String> {
    let (value, ignored) =
        compat::from_json(value).map_err(|e| format!("invalid JSON value: {e}"))?;
    *note = ignored;
    Ok(Versioned {
        value,
        mod_revision,
    })
}
