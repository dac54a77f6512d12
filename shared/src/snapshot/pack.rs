//! Building a section from sorted entries so that its B-tree leaves are full.
//!
//! [`OrdMap`] splits a full leaf at its median, so entries inserted in key order leave
//! every leaf half empty, and a leaf reserves room for all its entries: half of the
//! entry bytes of every section built from a listing would be spare room. Inserting
//! every other entry first and then the ones between them fills each half-full leaf of
//! the first pass exactly, without a split, so a packed section holds its entries in
//! about half the leaves. Later changes insert into these full leaves and split them as
//! usual.

use imbl::OrdMap;

/// A map of `sorted` (in key order, keys distinct) in full leaves. Entries are moved.
pub fn packed<K: Ord + Clone, V: Clone>(sorted: Vec<(K, V)>) -> OrdMap<K, V> {
    debug_assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
    let mut odd = Vec::with_capacity(sorted.len() / 2);
    let mut out = OrdMap::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i % 2 == 0 {
            out.insert(k, v);
        } else {
            odd.push((k, v));
        }
    }
    for (k, v) in odd {
        out.insert(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same entries in the same order, whatever the keys.
        #[test]
        fn keeps_every_entry(keys in prop::collection::btree_set(any::<u32>(), 0..2000)) {
            let sorted: Vec<(u32, u64)> = keys.iter().map(|&k| (k, u64::from(k) * 3)).collect();
            let map = packed(sorted.clone());
            let listed: Vec<(u32, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(listed, sorted);
        }
    }
}
