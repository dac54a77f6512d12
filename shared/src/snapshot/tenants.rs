//! The tenant section: records by id, and the index from API-key digest to tenant.
//!
//! A digest listed by two or more tenants (only a hand-written record can do that:
//! `shardctl` draws keys at random) authenticates none of them: picking one would hand
//! one tenant's traffic to another, and which one a router picked would depend on the
//! order it saw the writes in. Such digests wait in `shared` with all their holders, so
//! removing all but one holder gives the key back to the last one, whatever the order.

use imbl::OrdMap;

use super::Versioned;
use super::pack::packed;
use crate::auth::KeyDigest;
use crate::ids::TenantId;
use crate::records::TenantRecord;

#[derive(Debug, Clone, Default)]
pub(super) struct Tenants {
    pub(super) records: OrdMap<TenantId, Versioned<TenantRecord>>,
    /// Digest of each valid API key held by exactly one tenant → that tenant: a
    /// request's key costs one hash and one lookup.
    pub(super) by_digest: OrdMap<[u8; 32], TenantId>,
    /// Digests held by more than one tenant → their holders, sorted; none of them
    /// authenticates with it.
    pub(super) shared: OrdMap<[u8; 32], Vec<TenantId>>,
}

impl Tenants {
    /// Puts one tenant's record and its key digests: the cost is that tenant's keys, not
    /// every tenant's (a listing of 100,000 tenants applies 100,000 of these).
    pub(super) fn insert(&mut self, id: TenantId, record: Versioned<TenantRecord>) {
        self.remove(&id);
        for digest in distinct_digests(&record.value) {
            if let Some(holders) = self.shared.get_mut(&digest) {
                if let Err(at) = holders.binary_search(&id) {
                    holders.insert(at, id.clone());
                }
            } else if let Some(other) = self.by_digest.remove(&digest) {
                let mut holders = vec![other, id.clone()];
                holders.sort();
                self.shared.insert(digest, holders);
            } else {
                self.by_digest.insert(digest, id.clone());
            }
        }
        self.records.insert(id, record);
    }

    /// Removes one tenant's record and its hold on each of its digests.
    pub(super) fn remove(&mut self, id: &TenantId) {
        let Some(old) = self.records.remove(id) else {
            return;
        };
        for digest in distinct_digests(&old.value) {
            if let Some(holders) = self.shared.get_mut(&digest) {
                holders.retain(|h| h != id);
                if holders.len() <= 1 {
                    let last = holders.pop();
                    self.shared.remove(&digest);
                    if let Some(last) = last {
                        self.by_digest.insert(digest, last);
                    }
                }
            } else if self.by_digest.get(&digest) == Some(id) {
                self.by_digest.remove(&digest);
            }
        }
    }

    /// The section a listing builds at once from its tenants in any order: the same
    /// records and index the puts of those tenants give, applied in any order.
    pub(super) fn listed(mut tenants: Vec<(TenantId, Versioned<TenantRecord>)>) -> Self {
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let keys = tenants.iter().map(|(_, t)| t.value.keys.len()).sum();
        let mut pairs = Vec::with_capacity(keys);
        for (id, t) in &tenants {
            pairs.extend(
                distinct_digests(&t.value)
                    .into_iter()
                    .map(|d| (d, id.clone())),
            );
        }
        pairs.sort_unstable_by_key(|p| p.0);
        let mut single = Vec::with_capacity(pairs.len());
        let mut shared = OrdMap::new();
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            match run {
                [(digest, id)] => single.push((*digest, id.clone())),
                _ => {
                    let mut holders: Vec<TenantId> = run.iter().map(|(_, id)| id.clone()).collect();
                    holders.sort();
                    shared.insert(run[0].0, holders);
                }
            }
        }
        drop(pairs);
        Self {
            records: packed(tenants),
            by_digest: packed(single),
            shared,
        }
    }
}

/// A record's key digests, each once (a record may list one key twice).
fn distinct_digests(record: &TenantRecord) -> Vec<[u8; 32]> {
    let mut digests: Vec<[u8; 32]> = record.keys.iter().map(KeyDigest::bytes).collect();
    digests.sort_unstable();
    digests.dedup();
    digests
}
