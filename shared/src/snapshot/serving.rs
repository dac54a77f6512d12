//! Who serves a model now: the members of its stored assignment (current, then those
//! being replaced), or — for a model published too recently to be placed — the top k
//! live active workers by rendezvous score, as the placement would choose them
//! (deterministic at a given snapshot). The router forwards to them; `shardctl` loads a
//! canary's or shadow's version on them.

use super::Snapshot;
use crate::ids::{ModelKey, WorkerId};
use crate::placement;
use crate::records::AdminState;

impl Snapshot {
    /// The workers that may serve `key`, each with whether it is only a member being
    /// replaced (`true`: serve from it only when the others cannot). Workers need not be
    /// live; callers look their records up.
    pub fn serving_members(&self, key: &ModelKey) -> Vec<(&WorkerId, bool)> {
        let mut ids: Vec<(&WorkerId, bool)> = Vec::new();
        if let Some(a) = self.assignments().get(key) {
            ids.extend(a.value.workers.iter().map(|w| (w, false)));
            ids.extend(
                a.value
                    .previous
                    .iter()
                    .filter(|w| !a.value.workers.contains(w))
                    .map(|w| (w, true)),
            );
        } else if let Ok(params) = self.placement_params() {
            let shard_key = key.shard_key();
            let mut ranked: Vec<(u64, &WorkerId)> = self
                .workers()
                .keys()
                .filter(|w| self.admin_state(w) == AdminState::Active)
                .map(|w| (placement::score(&params, &shard_key, w), w))
                .collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let k = self.shard_size(&key.tenant) as usize;
            ids.extend(ranked.into_iter().take(k).map(|(_, w)| (w, false)));
        }
        ids
    }
}
