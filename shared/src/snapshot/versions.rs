//! The published versions of one model: a sorted boxed slice, exactly as long as the
//! number of versions (a `BTreeMap` leaf reserves room for 11, ~370 bytes for a model
//! with one version). A model has a handful of versions, and a change rebuilds the
//! slice, which the copy-on-write snapshot does for the whole entry anyway.

use std::sync::Arc;

use super::Versioned;
use crate::ids::VersionId;
use crate::manifest::Manifest;

/// One model's versions by id, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions(Box<[(VersionId, Arc<Versioned<Manifest>>)]>);

impl Versions {
    fn find(&self, id: &VersionId) -> Result<usize, usize> {
        position(&self.0, id)
    }

    /// The manifest of version `id`.
    pub fn get(&self, id: &VersionId) -> Option<&Arc<Versioned<Manifest>>> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, id: &VersionId) -> bool {
        self.find(id).is_ok()
    }

    /// Adds or replaces version `id`.
    pub fn insert(&mut self, id: VersionId, manifest: Arc<Versioned<Manifest>>) {
        let mut all = std::mem::take(&mut self.0).into_vec();
        match position(&all, &id) {
            Ok(i) => all[i].1 = manifest,
            Err(i) => all.insert(i, (id, manifest)),
        }
        self.0 = all.into_boxed_slice();
    }

    /// Removes version `id`, returning its manifest.
    pub fn remove(&mut self, id: &VersionId) -> Option<Arc<Versioned<Manifest>>> {
        let i = self.find(id).ok()?;
        let mut all = std::mem::take(&mut self.0).into_vec();
        let (_, gone) = all.remove(i);
        self.0 = all.into_boxed_slice();
        Some(gone)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Versions and manifests in id order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&VersionId, &Arc<Versioned<Manifest>>)> {
        self.0.iter().map(|(v, m)| (v, m))
    }

    /// Version ids in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &VersionId> {
        self.0.iter().map(|(v, _)| v)
    }

    /// Manifests in version order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Arc<Versioned<Manifest>>> {
        self.0.iter().map(|(_, m)| m)
    }
}

fn position(all: &[(VersionId, Arc<Versioned<Manifest>>)], id: &VersionId) -> Result<usize, usize> {
    all.binary_search_by(|(v, _)| v.cmp(id))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::tests::manifest_json;

    fn manifest(version: &str, published_at: u64) -> Arc<Versioned<Manifest>> {
        let mut value: Manifest = serde_json::from_str(&manifest_json("a", "m", version)).unwrap();
        value.published_at = published_at;
        Arc::new(Versioned {
            value,
            mod_revision: 1,
        })
    }

    proptest! {
        /// Any sequence of inserts and removes leaves what a `BTreeMap` would hold, in
        /// the same order, with no spare capacity.
        #[test]
        fn behaves_as_a_sorted_map(ops in prop::collection::vec((0..6u8, any::<bool>()), 0..30)) {
            let (mut ours, mut model) = (Versions::default(), BTreeMap::new());
            for (i, (v, put)) in ops.iter().enumerate() {
                let id = VersionId::new(format!("v{v}")).unwrap();
                if *put {
                    ours.insert(id.clone(), manifest(id.as_str(), i as u64));
                    model.insert(id, i as u64);
                } else {
                    let gone = ours.remove(&id).map(|m| m.value.published_at);
                    prop_assert_eq!(gone, model.remove(&id));
                }
                let listed: Vec<(VersionId, u64)> =
                    ours.iter().map(|(v, m)| (v.clone(), m.value.published_at)).collect();
                let expected: Vec<(VersionId, u64)> =
                    model.iter().map(|(v, p)| (v.clone(), *p)).collect();
                prop_assert_eq!(listed, expected);
                prop_assert_eq!(ours.len(), model.len());
                for v in 0..6u8 {
                    let id = VersionId::new(format!("v{v}")).unwrap();
                    prop_assert_eq!(ours.contains_key(&id), model.contains_key(&id));
                    prop_assert_eq!(ours.get(&id).map(|m| m.value.published_at), model.get(&id).copied());
                }
            }
        }
    }
}
