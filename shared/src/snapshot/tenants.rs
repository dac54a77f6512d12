//! The tenant section: records by id, and the index from API-key digest to tenant.

use imbl::OrdMap;

use super::Versioned;
use crate::auth::KeyDigest;
use crate::ids::TenantId;
use crate::records::TenantRecord;

#[derive(Debug, Clone, Default)]
pub(super) struct Tenants {
    pub(super) records: OrdMap<TenantId, Versioned<TenantRecord>>,
    /// Digest of each valid API key → tenant: a request's key costs one hash and one lookup.
    pub(super) by_digest: OrdMap<[u8; 32], TenantId>,
}

impl Tenants {
    /// Puts one tenant's record and its key digests: the cost is that tenant's keys, not
    /// every tenant's (a listing of 100,000 tenants applies 100,000 of these).
    pub(super) fn insert(&mut self, id: TenantId, record: Versioned<TenantRecord>) {
        self.remove(&id);
        for digest in record.value.keys.iter().map(KeyDigest::bytes) {
            self.by_digest.insert(digest, id.clone());
        }
        self.records.insert(id, record);
    }

    /// Removes one tenant's record and the digests that point at it.
    pub(super) fn remove(&mut self, id: &TenantId) {
        if let Some(old) = self.records.remove(id) {
            for digest in old.value.keys.iter().map(KeyDigest::bytes) {
                if self.by_digest.get(&digest) == Some(id) {
                    self.by_digest.remove(&digest);
                }
            }
        }
    }
}
