//! Trimming parsed records before the snapshot keeps them: names, configs and widths
//! interned, vectors without spare room. A JSON array grows a `Vec` by doubling from 4, so a
//! tenant with one key would keep room for four 56-byte digests, and a two-layer config
//! for four layers; across 100,000 tenant-models that is tens of MiB.

use std::sync::{Arc, LazyLock};

use crate::intern::Interner;
use crate::manifest::{Manifest, ModelConfig};
use crate::records::{Assignment, TenantRecord};

/// Model configs: tenants trained by one pipeline share their layers and names.
static CONFIGS: LazyLock<Interner<Arc<ModelConfig>>> = LazyLock::new(Interner::default);

/// Layer widths, shared the same way.
static DIMS: LazyLock<Interner<Arc<[usize]>>> = LazyLock::new(Interner::default);

pub(super) fn tenant(record: &mut TenantRecord) {
    record.keys.shrink_to_fit();
}

pub(super) fn manifest(m: &mut Manifest) {
    m.location.shrink_to_fit();
    if let Some(config) = Arc::get_mut(&mut m.config) {
        config.layers.shrink_to_fit();
    }
    m.config = CONFIGS.intern(&m.config);
    m.dims = DIMS.intern(&m.dims);
}

pub(super) fn assignment(a: &mut Assignment) {
    for w in a.workers.iter_mut().chain(&mut a.previous) {
        *w = w.interned();
    }
    a.workers.shrink_to_fit();
    a.previous.shrink_to_fit();
}
