//! The placement problem a snapshot poses: live workers with their admin state, and
//! every model with a live version with its shard size and stored members.

use super::Snapshot;
use crate::placement::{Params, Problem, ShardSpec, WorkerSlot};
use crate::records::AdminState;

impl Snapshot {
    /// Placement input for this snapshot. Active live workers may keep and take shard
    /// members, cordoned ones only keep theirs, draining ones neither; workers that are
    /// not live do not appear (their memberships are repaired away).
    pub fn placement_problem(&self) -> Problem {
        let workers = self
            .workers()
            .keys()
            .map(|id| {
                let state = self.admin_state(id);
                WorkerSlot {
                    id: id.clone(),
                    keep: state != AdminState::Draining,
                    take: state == AdminState::Active,
                }
            })
            .collect();
        let shards = self
            .models()
            .iter()
            .filter(|(_, entry)| entry.live_manifest().is_some())
            .map(|(key, _)| ShardSpec {
                key: key.clone(),
                k: self.shard_size(&key.tenant),
                current: self
                    .assignments()
                    .get(key)
                    .map(|a| a.value.workers.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Problem { workers, shards }
    }

    /// Placement parameters in force, checked.
    pub fn placement_params(&self) -> Result<Params, String> {
        Params::from_config(&self.placement())
    }
}
