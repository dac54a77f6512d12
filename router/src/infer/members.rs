//! Who may serve a request: the members of a model's shard as the request path sees
//! them — the stored assignment's current then previous members, or, for a model
//! published too recently to be placed, the top k live active workers by rendezvous
//! score — with the attributes [`crate::select`] orders them by (preferred, resident,
//! in flight).

use std::time::Instant;

use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::manifest::Manifest;
use shardline_shared::records::AdminState;
use shardline_shared::snapshot::Snapshot;

use crate::health::Fleet;
use crate::select::Candidate;

/// A shard member as the request path sees it.
#[derive(Debug)]
pub struct Member<'a> {
    pub id: &'a WorkerId,
    pub address: &'a str,
}

/// The members that may serve `key`: the stored assignment's current then previous
/// members, or — for a model published too recently to be placed — the top k live
/// active workers by rendezvous score (deterministic at a given revision). Returns the
/// live members with their choice attributes.
pub fn candidates<'s>(
    snap: &'s Snapshot,
    fleet: &Fleet,
    key: &ModelKey,
    manifest: &Manifest,
    now: Instant,
) -> (Vec<Member<'s>>, Vec<Candidate>) {
    let ids = snap.serving_members(key);
    let mut members = Vec::with_capacity(ids.len());
    let mut cands = Vec::with_capacity(ids.len());
    for (id, previous) in ids {
        let Some(record) = snap.workers().get(id) else {
            continue;
        };
        let health = fleet.get(id);
        let resident = snap.is_resident(id, key, &manifest.version);
        cands.push(Candidate {
            index: members.len(),
            eligible: true,
            preferred: !previous
                && snap.admin_state(id) != AdminState::Draining
                && !fleet.is_ejected(&health, now),
            resident,
            in_flight: health.in_flight(),
        });
        members.push(Member {
            id,
            address: &record.value.address,
        });
    }
    (members, cands)
}
