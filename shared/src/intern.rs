//! One shared copy of each value the control plane holds many times over.
//!
//! A tenant's name appears in its record's key, its models' keys, its assignments and
//! its manifests; a worker's name in every assignment and resident entry that mentions
//! it; most tenants' models share one config (the same features, the same layers). The
//! snapshot passes what it keeps through an [`Interner`], so 100,000 tenants on 1,000
//! workers hold one allocation per distinct value and each further mention is a
//! reference count. Only the snapshot (one watcher task per process) interns; values
//! parsed on the request path are never looked up here.
//!
//! Entries nobody else holds any more are dropped when the table has doubled since the
//! last sweep, so a table stays within twice the values in use, at O(1) amortised.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use arcstr::ArcStr;

/// Smallest table size at which a sweep runs.
const FIRST_SWEEP: usize = 1024;

/// A reference-counted handle whose clones share one allocation.
pub trait Shared: Clone + Hash + Eq {
    /// How many handles share this value's allocation.
    fn holders(&self) -> usize;
}

impl<T: ?Sized + Hash + Eq> Shared for Arc<T> {
    fn holders(&self) -> usize {
        Arc::strong_count(self)
    }
}

impl Shared for ArcStr {
    fn holders(&self) -> usize {
        // A literal has no count and is never freed: never swept either.
        ArcStr::strong_count(self).unwrap_or(usize::MAX)
    }
}

/// A table of shared copies of `T` (an `Arc` or an [`ArcStr`]).
#[derive(Debug)]
pub struct Interner<T> {
    table: Mutex<Table<T>>,
}

#[derive(Debug)]
struct Table<T> {
    set: HashSet<T>,
    sweep_at: usize,
}

impl<T: Shared> Default for Interner<T> {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                set: HashSet::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }
}

impl<T: Shared> Interner<T> {
    /// The shared copy of `value` (which becomes the shared copy if there is none).
    pub fn intern(&self, value: &T) -> T {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = table.set.get(value) {
            return shared.clone();
        }
        if table.set.len() >= table.sweep_at {
            // Under the lock nobody can take a new reference to an entry held only here.
            table.set.retain(|v| v.holders() > 1);
            table.sweep_at = (table.set.len() * 2).max(FIRST_SWEEP);
        }
        table.set.insert(value.clone());
        value.clone()
    }

    /// Values in the table (in use, or awaiting the next sweep).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tenant, model, version and worker names.
pub static NAMES: LazyLock<Interner<ArcStr>> = LazyLock::new(Interner::default);

/// The shared copy of `name`.
pub fn intern(name: &ArcStr) -> ArcStr {
    NAMES.intern(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let a = ArcStr::from("intern-test-a");
        let b = ArcStr::from("intern-test-a");
        assert!(!ArcStr::ptr_eq(&a, &b));
        let (a, b) = (intern(&a), intern(&b));
        assert!(ArcStr::ptr_eq(&a, &b));
        assert_eq!(&*intern(&ArcStr::from("intern-test-b")), "intern-test-b");
        let config: Arc<[usize]> = Arc::from(vec![4, 16, 1]);
        let table = Interner::default();
        let shared = table.intern(&config);
        assert!(Arc::ptr_eq(
            &shared,
            &table.intern(&Arc::from(vec![4, 16, 1]))
        ));
    }

    #[test]
    fn values_nobody_holds_are_swept() {
        let table = Interner::<ArcStr>::default();
        // Many short-lived values: the table must not keep them all.
        for i in 0..(20 * FIRST_SWEEP) {
            drop(table.intern(&ArcStr::from(format!("sweep-{i}"))));
        }
        let kept = table.intern(&ArcStr::from("sweep-kept"));
        assert!(table.len() < 4 * FIRST_SWEEP, "{} values kept", table.len());
        assert!(ArcStr::ptr_eq(
            &kept,
            &table.intern(&ArcStr::from("sweep-kept"))
        ));
    }
}
