//! The exact check behind [`ViolationKind::OverlapExceeded`]: which shards share more
//! than `max_overlap` workers with another shard.
//!
//! [`ViolationKind::OverlapExceeded`]: super::problem::ViolationKind::OverlapExceeded

use super::state::State;

/// For each shard, whether it shares more than `m` workers with another shard.
///
/// Two exact methods; the cheaper one for this state is used. Counting every
/// (m+1)-subset of every shard (a pair shares more than m workers exactly when it
/// shares such a subset) costs Σ C(|shard|, m+1); counting shared workers pair by pair
/// through the inverted index costs Σ load².
pub(crate) fn overlapping_shards(st: &State<'_>, m: u32) -> Vec<bool> {
    let t = st.shards.len();
    let m = m as usize;
    if st.shards.iter().all(|s| s.members.len() <= m) {
        return vec![false; t];
    }
    let subset_cost: u64 = st
        .shards
        .iter()
        .map(|s| binomial(s.members.len() as u64, m as u64 + 1))
        .fold(0, u64::saturating_add);
    let pair_cost: u64 = st.load.iter().map(|&l| u64::from(l) * u64::from(l)).sum();
    let bits = (u32::BITS - (st.ids.len() as u32).leading_zeros()).max(1) as usize;
    if (m + 1) * bits <= 128 && subset_cost <= pair_cost {
        overlapping_by_subsets(st, m, bits)
    } else {
        overlapping_by_pairs(st, m)
    }
}

fn overlapping_by_subsets(st: &State<'_>, m: usize, bits: usize) -> Vec<bool> {
    let t = st.shards.len();
    let shard_bits = (u32::BITS - (t as u32).leading_zeros()) as usize;
    let mut flags = vec![false; t];
    let mut sorted = Vec::new();
    let mut each = |f: &mut dyn FnMut(u128, u32)| {
        for (x, shard) in st.shards.iter().enumerate() {
            sorted.clone_from(&shard.members);
            sorted.sort_unstable();
            for_each_subset(&sorted, m + 1, bits, |key| f(key, x as u32));
        }
    };
    // Sorting (subset, shard) entries puts the shards sharing a subset side by side.
    if (m + 1) * bits + shard_bits <= 64 {
        let mut entries: Vec<u64> = Vec::new();
        each(&mut |key, x| entries.push(((key as u64) << shard_bits) | u64::from(x)));
        entries.sort_unstable();
        flag_runs(
            &entries,
            |e| e >> shard_bits,
            |e| (e & ((1 << shard_bits) - 1)) as usize,
            &mut flags,
        );
    } else {
        let mut entries: Vec<(u128, u32)> = Vec::new();
        each(&mut |key, x| entries.push((key, x)));
        entries.sort_unstable();
        flag_runs(&entries, |e| e.0, |e| e.1 as usize, &mut flags);
    }
    flags
}

/// Flags the shards of every run of two or more entries with the same subset.
fn flag_runs<E: Copy, K: PartialEq>(
    entries: &[E],
    subset: impl Fn(E) -> K,
    shard: impl Fn(E) -> usize,
    flags: &mut [bool],
) {
    for run in entries.chunk_by(|&a, &b| subset(a) == subset(b)) {
        if run.len() > 1 {
            for &e in run {
                flags[shard(e)] = true;
            }
        }
    }
}

fn overlapping_by_pairs(st: &State<'_>, m: usize) -> Vec<bool> {
    let t = st.shards.len();
    // Per other shard: (stamp of the shard being counted, shared workers).
    let mut shared: Vec<(u32, u32)> = vec![(u32::MAX, 0); t];
    (0..t)
        .map(|x| {
            let mut over = false;
            for &w in &st.shards[x].members {
                for &p in &st.holds[w as usize] {
                    let slot = &mut shared[p as usize];
                    if slot.0 != x as u32 {
                        *slot = (x as u32, 0);
                    }
                    slot.1 += 1;
                    over |= p as usize != x && slot.1 as usize > m;
                }
            }
            over
        })
        .collect()
}

/// C(n, r), saturating at `u64::MAX`.
pub(crate) fn binomial(n: u64, r: u64) -> u64 {
    if r > n {
        return 0;
    }
    let r = r.min(n - r);
    let mut acc: u128 = 1;
    for i in 0..r {
        // C(n, i+1) = C(n, i)·(n−i)/(i+1), and the division is exact.
        acc = acc * u128::from(n - i) / u128::from(i + 1);
        if acc > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    acc as u64
}

/// Calls `f` with every `r`-subset of `sorted`, packed as `bits`-bit indices.
fn for_each_subset(sorted: &[u32], r: usize, bits: usize, mut f: impl FnMut(u128)) {
    let n = sorted.len();
    if r > n || r == 0 {
        return;
    }
    let mut pick: Vec<usize> = (0..r).collect();
    loop {
        f(pick
            .iter()
            .fold(0u128, |acc, &i| (acc << bits) | u128::from(sorted[i])));
        // Advance to the next combination in lexicographic order.
        let Some(j) = (0..r).rev().find(|&j| pick[j] < n - r + j) else {
            return;
        };
        pick[j] += 1;
        for l in j + 1..r {
            pick[l] = pick[l - 1] + 1;
        }
    }
}
