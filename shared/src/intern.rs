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

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Smallest table size at which a sweep runs.
const FIRST_SWEEP: usize = 1024;

/// A table of shared copies of `T`.
#[derive(Debug)]
pub struct Interner<T: ?Sized> {
    table: Mutex<Table<T>>,
}

#[derive(Debug)]
struct Table<T: ?Sized> {
    set: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                set: HashSet::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of `value` (which becomes the shared copy if there is none).
    pub fn intern(&self, value: &Arc<T>) -> Arc<T> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = table.set.get(Borrow::<T>::borrow(value)) {
            return Arc::clone(shared);
        }
        if table.set.len() >= table.sweep_at {
            // Under the lock nobody can take a new reference to an entry held only here.
            table.set.retain(|v| Arc::strong_count(v) > 1);
            table.sweep_at = (table.set.len() * 2).max(FIRST_SWEEP);
        }
        table.set.insert(Arc::clone(value));
        Arc::clone(value)
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
pub static NAMES: LazyLock<Interner<str>> = LazyLock::new(Interner::default);

/// The shared copy of `name`.
pub fn intern(name: &Arc<str>) -> Arc<str> {
    NAMES.intern(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let a: Arc<str> = Arc::from("intern-test-a");
        let b: Arc<str> = Arc::from("intern-test-a");
        assert!(!Arc::ptr_eq(&a, &b));
        let (a, b) = (intern(&a), intern(&b));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*intern(&Arc::from("intern-test-b")), "intern-test-b");
    }

    #[test]
    fn values_nobody_holds_are_swept() {
        let table = Interner::<str>::default();
        // Many short-lived values: the table must not keep them all.
        for i in 0..(20 * FIRST_SWEEP) {
            drop(table.intern(&Arc::from(format!("sweep-{i}"))));
        }
        let kept = table.intern(&Arc::from("sweep-kept"));
        assert!(table.len() < 4 * FIRST_SWEEP, "{} values kept", table.len());
        assert!(Arc::ptr_eq(&kept, &table.intern(&Arc::from("sweep-kept"))));
    }
}
