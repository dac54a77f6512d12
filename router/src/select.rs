//! Member choice: owns the order in which a router tries the members of a
//! tenant's shard. The first attempt is a power-of-two-choices pick within
//! the best non-empty tier; the rest follow as fallbacks for retries, best
//! tier and least loaded first. Members that are not live never appear.
//! Randomness comes from the caller's `fastrand::Rng`, so a seeded `Rng`
//! gives a reproducible order.

/// One shard member as seen by the router at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Caller's identifier; the output lists these.
    pub index: usize,
    /// Live: may be sent requests at all.
    pub eligible: bool,
    /// Live and administratively active (not draining or cordoned).
    pub preferred: bool,
    /// Reports the tenant's model as loaded.
    pub resident: bool,
    /// Requests this router has in flight to it.
    pub in_flight: u32,
}

impl Candidate {
    /// 0 = preferred and resident, 1 = preferred, 2 = eligible only;
    /// `None` if not eligible.
    pub fn tier(&self) -> Option<u8> {
        match (self.eligible, self.preferred, self.resident) {
            (false, _, _) => None,
            (true, true, true) => Some(0),
            (true, true, false) => Some(1),
            (true, false, _) => Some(2),
        }
    }
}

/// Attempt order over the eligible candidates, as their `index` values: first
/// the better of two distinct random members of the best non-empty tier (the
/// one with fewer in flight; ties go to the first drawn), then every other
/// eligible candidate by (tier, in-flight), equal ones in random order.
/// One allocation: the returned `Vec`.
pub fn order(candidates: &[Candidate], rng: &mut fastrand::Rng) -> Vec<usize> {
    // Work on positions into `candidates`; turned into `index` at the end.
    let mut out: Vec<usize> = (0..candidates.len())
        .filter(|&p| candidates[p].eligible)
        .collect();
    let key = |p: usize| {
        (
            candidates[p].tier().unwrap_or(u8::MAX),
            candidates[p].in_flight,
        )
    };
    let Some(best) = out.iter().map(|&p| key(p).0).min() else {
        return out;
    };
    let nth_best = |n: usize| {
        out.iter()
            .position(|&p| key(p).0 == best)
            .and_then(|start| (start..out.len()).filter(|&i| key(out[i]).0 == best).nth(n))
            .unwrap_or(0)
    };
    let members = out.iter().filter(|&&p| key(p).0 == best).count();
    let first = if members >= 2 {
        let a = rng.usize(0..members);
        let mut b = rng.usize(0..members - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (nth_best(a), nth_best(b));
        if key(out[b]).1 < key(out[a]).1 { b } else { a }
    } else {
        nth_best(0)
    };
    out.swap(0, first);
    rng.shuffle(&mut out[1..]);
    out[1..].sort_by_key(|&p| key(p));
    for p in &mut out {
        *p = candidates[*p].index;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(index: usize, tier: u8, in_flight: u32) -> Candidate {
        Candidate {
            index,
            eligible: tier < 3,
            preferred: tier < 2,
            resident: tier == 0,
            in_flight,
        }
    }

    #[test]
    fn examples() {
        let mut rng = fastrand::Rng::with_seed(7);
        assert!(order(&[], &mut rng).is_empty());
        assert!(order(&[cand(4, 3, 0)], &mut rng).is_empty());
        assert_eq!(order(&[cand(9, 2, 5)], &mut rng), vec![9]);
        // Two in the best tier: p2c samples both, so the lighter wins.
        let c = [
            cand(10, 1, 0),
            cand(11, 0, 7),
            cand(12, 3, 0),
            cand(13, 0, 2),
            cand(14, 2, 0),
        ];
        for _ in 0..20 {
            assert_eq!(order(&c, &mut rng), vec![13, 11, 10, 14]);
        }
    }

    #[test]
    fn least_loaded_is_favoured() {
        let c = [
            cand(0, 0, 0),
            cand(1, 0, 100),
            cand(2, 0, 100),
            cand(3, 0, 100),
        ];
        let mut rng = fastrand::Rng::with_seed(42);
        let runs = 10_000;
        let zero_first = (0..runs).filter(|_| order(&c, &mut rng)[0] == 0).count();
        // Expected 1/2 (chance it is one of the two drawn), vs 1/4 uniform.
        assert!(zero_first * 10 > runs * 4, "{zero_first}");
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((0u8..4, prop_oneof![0u32..3, 0u32..100]), 0..9).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (tier, inf))| cand(100 + i, tier, inf))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn order_invariants(c in candidates(), seed in any::<u64>()) {
            let got = order(&c, &mut fastrand::Rng::with_seed(seed));
            let mut sorted = got.clone();
            sorted.sort_unstable();
            let want: Vec<usize> = c.iter().filter(|x| x.eligible).map(|x| x.index).collect();
            prop_assert_eq!(sorted, want);
            let Some(&first) = got.first() else { return Ok(()); };
            let by_index = |i: usize| c.iter().find(|x| x.index == i).copied();
            let first = by_index(first).ok_or_else(|| TestCaseError::fail("unknown index"))?;
            let best = c.iter().filter_map(Candidate::tier).min();
            prop_assert_eq!(first.tier(), best);
            // p2c: never the unique maximum; at most the second-highest load.
            let mut loads: Vec<u32> = c.iter().filter(|x| x.tier() == best).map(|x| x.in_flight).collect();
            loads.sort_unstable_by(|a, b| b.cmp(a));
            if loads.len() >= 2 {
                prop_assert!(first.in_flight <= loads[1]);
            }
            // Fallbacks are ordered by (tier, in-flight).
            let keys: Vec<_> = got[1..].iter().filter_map(|&i| by_index(i)).map(|x| (x.tier(), x.in_flight)).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
