//! Shardline's control plane over etcd, shared by the router, the worker, the placement
//! controller and `shardctl`.
//!
//! - [`store`]: the small [`KvStore`] trait (get, list, watch, conditional txn, leases);
//! - [`etcd`]: its etcd implementation; [`memory`]: an in-memory double for unit tests;
//! - [`ops`]: typed, compare-and-swap writes ([`ControlPlane`]): tenants and API keys,
//!   model versions and the live pointer, worker admin state, assignments, placement;
//! - [`lease`]: worker registration under a lease with a keep-alive loop;
//! - [`watch`]: the watched snapshot ([`SnapshotWatcher`]), an `Arc<Snapshot>` kept current;
//! - [`metrics`]: the metrics these register.
//!
//! Only etcd: serving HTTP, flags and signals are `shardline-service`'s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use shardline_control::{ControlMetrics, ControlPlane, EtcdStore, SnapshotWatcher};
//! use shardline_shared::keys::Prefix;
//!
//! let store = Arc::new(EtcdStore::connect(&["http://127.0.0.1:2379".into()]).await?);
//! let cp = ControlPlane::new(store.clone(), Prefix::default());
//! let watcher = SnapshotWatcher::spawn(store, Prefix::default(), ControlMetrics::unregistered()?);
//! let snapshot = watcher.ready().await;
//! println!("{} workers live at revision {}", snapshot.workers().len(), snapshot.revision());
//! # let _ = cp; Ok(()) }
//! ```

pub mod etcd;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod store;
pub mod watch;

pub use etcd::EtcdStore;
pub use lease::{LeaseConfig, Registration, ResidentSet, TXN_OPS};
pub use memory::MemStore;
pub use metrics::ControlMetrics;
pub use ops::{ControlPlane, OpError};
pub use store::{KvStore, Position, StoreError};
pub use watch::SnapshotWatcher;
