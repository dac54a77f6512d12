//! What the quality phase saw, its targets (issue 16: max/avg ≤ 1.05, zero identical
//! shards where feasible, overlap ≤ m, every move prefetched), and its table rows.

use serde::Serialize;

use super::audit::{MoveCounts, Unfinished};
use super::figures::Placement;

/// Highest max/avg slot load after the phase.
pub const MAX_RATIO_TARGET: f64 = 1.05;

/// Figures of the controller's own metrics at the end (`shardline_placement_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControllerView {
    pub moves: f64,
    pub balance_moves: f64,
    pub prefetch_ok: f64,
    pub prefetch_failed: f64,
    pub conflicts: f64,
    pub violations: f64,
    pub load_max_ratio: f64,
    pub load_min_ratio: f64,
}

/// The quality phase's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quality {
    /// `--max-balance-moves-per-minute` of the controller's router.
    pub balance_moves_per_minute: u32,
    pub new_tenants: usize,
    pub joins: usize,
    pub losses: usize,
    /// The stored placement when the controller started (as `place()` left it).
    pub before: Placement,
    pub after: Placement,
    /// From the first change until the controller's last write.
    pub converged_secs: f64,
    /// Whether the controller went quiet with nothing unfinished within the time limit.
    pub quiet: bool,
    pub timeout_secs: f64,
    /// What was still unfinished at the end (all zero when `quiet`).
    pub unfinished: Unfinished,
    pub moves: MoveCounts,
    pub cold_examples: Vec<String>,
    /// Loads the simulated workers answered 200.
    pub prefetches_answered: u64,
    /// Keep-alives of the simulated workers meant to stay that failed (a lease lost by
    /// accident would be one more loss than the phase made).
    pub keep_alive_failures: u64,
    pub controller: ControllerView,
}

impl Quality {
    /// The targets missed, one line each.
    pub fn misses(&self) -> Vec<String> {
        let mut m = Vec::new();
        if !self.quiet {
            m.push(format!(
                "placement was not settled after {:.0} s ({} assignments with `previous`, {} members on lost workers, {} new models unassigned)",
                self.timeout_secs,
                self.unfinished.with_previous,
                self.unfinished.on_lost_workers,
                self.unfinished.unassigned
            ));
        }
        if self.keep_alive_failures > 0 {
            m.push(format!(
                "{} keep-alives of simulated workers failed during the quality phase (leases may have been lost besides the ones revoked)",
                self.keep_alive_failures
            ));
        }
        let a = &self.after;
        if a.max_ratio > MAX_RATIO_TARGET {
            m.push(format!(
                "slot load max/avg is {:.3} after the churn (target ≤ 1.05)",
                a.max_ratio
            ));
        }
        if a.identical_pairs > 0 {
            m.push(format!(
                "{} pairs of identical shards (target 0)",
                a.identical_pairs
            ));
        }
        if a.max_overlap > a.m {
            m.push(format!(
                "two shards share {} workers (target ≤ m = {})",
                a.max_overlap, a.m
            ));
        }
        if self.moves.cold > 0 {
            m.push(format!(
                "{} of {} moves named a member without the model resident (target 0), e.g. {}",
                self.moves.cold,
                self.moves.moves(),
                self.cold_examples.join(", ")
            ));
        }
        m
    }

    /// Markdown table rows (measure, value).
    pub fn rows(&self) -> Vec<(String, String)> {
        let (b, a) = (&self.before, &self.after);
        let load = |p: &Placement| {
            format!(
                "{}..{} on {} workers ({:.3} / {:.3})",
                p.min, p.max, p.pool, p.max_ratio, p.min_ratio
            )
        };
        let c = &self.controller;
        vec![
            (
                format!(
                    "quality phase: controller started (`--max-balance-moves-per-minute {}`), then {} tenants created, {} workers joined, {} lost their lease",
                    self.balance_moves_per_minute, self.new_tenants, self.joins, self.losses
                ),
                format!("{} shards before, {} after", b.shards, a.shards),
            ),
            (
                "slot load before, min..max (max/avg / min/avg)".into(),
                load(b),
            ),
            (
                "**slot load after, min..max (max/avg / min/avg)**".into(),
                format!("**{}**", load(a)),
            ),
            (
                "**identical shards / max pairwise overlap (m) after**".into(),
                format!(
                    "**{} / {} ({})** (before: {} / {})",
                    a.identical_pairs, a.max_overlap, a.m, b.identical_pairs, b.max_overlap
                ),
            ),
            (
                "controller settled (last write after the first change)".into(),
                if self.quiet {
                    format!("{:.0} s", self.converged_secs)
                } else {
                    format!("not within {:.0} s", self.timeout_secs)
                },
            ),
            (
                "assignment writes seen: creates / repair moves / balancing moves / grown".into(),
                format!(
                    "{} / {} / {} / {}",
                    self.moves.creates, self.moves.repairs, self.moves.balancing, self.moves.grown
                ),
            ),
            (
                "**moves naming a member without the model resident**".into(),
                format!(
                    "**{} of {}** ({} prefetches answered, {} keep-alives failed)",
                    self.moves.cold,
                    self.moves.moves(),
                    self.prefetches_answered,
                    self.keep_alive_failures
                ),
            ),
            (
                "controller metrics: moves / balancing / prefetch ok, failed / CAS conflicts / violations".into(),
                format!(
                    "{:.0} / {:.0} / {:.0}, {:.0} / {:.0} / {:.0}",
                    c.moves,
                    c.balance_moves,
                    c.prefetch_ok,
                    c.prefetch_failed,
                    c.conflicts,
                    c.violations
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled() -> Quality {
        let after = Placement {
            max_ratio: 1.04,
            min_ratio: 0.96,
            max_overlap: 2,
            m: 2,
            ..Placement::default()
        };
        Quality {
            quiet: true,
            after,
            ..Quality::default()
        }
    }

    #[test]
    fn a_settled_balanced_warm_run_meets_every_target() {
        assert!(settled().misses().is_empty());
    }

    #[test]
    fn each_target_is_checked() {
        let mut q = settled();
        q.quiet = false;
        q.after.max_ratio = 1.06;
        q.after.identical_pairs = 1;
        q.after.max_overlap = 3;
        q.moves.cold = 2;
        q.moves.balancing = 5;
        q.cold_examples = vec!["t/m: s-1".into()];
        let misses = q.misses();
        assert_eq!(misses.len(), 5, "{misses:?}");
        assert!(misses[4].contains("2 of 5") && misses[4].contains("t/m: s-1"));
    }
}
