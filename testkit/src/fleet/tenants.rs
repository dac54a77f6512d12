//! Tenants and models of a test fleet: created and published through the control plane
//! as `shardctl` would, then waited for — every router's snapshot, or the controller's
//! assignment.

use std::time::Duration;

use serde_json::Value;
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Key;
use shardline_shared::manifest::Manifest;
use shardline_shared::metrics::CONTROL_SNAPSHOT_REVISION;
use shardline_shared::records::{Assignment, PlacementConfig, TenantLimits};

use super::{DIM, TestFleet};
use crate::models::{MlpArtifact, publish};
use crate::wait::eventually;

impl TestFleet {
    /// Creates a tenant and returns its API key.
    pub async fn tenant(&self, name: &str, shard_size: Option<u32>) -> String {
        self.tenant_with(name, shard_size, TenantLimits::default())
            .await
    }

    pub async fn tenant_with(
        &self,
        name: &str,
        shard_size: Option<u32>,
        limits: TenantLimits,
    ) -> String {
        let key = self
            .cp
            .create_tenant(&name.parse().unwrap(), shard_size, limits)
            .await
            .unwrap();
        key.expose().to_owned()
    }

    /// Sets the placement's default shard size (before a controller writes its own).
    pub async fn placement_k(&self, k: u32) {
        let config = PlacementConfig {
            default_k: k,
            ..PlacementConfig::default()
        };
        self.cp.write_placement(&config, None).await.unwrap();
    }

    /// Publishes a small MLP `64 → 16 → 1` (seeded), makes it live, and waits until every
    /// running router's snapshot has it (and so the tenant and its keys made before).
    pub async fn publish(&self, tenant: &str, model: &str, version: &str, seed: u64) -> Manifest {
        let m = MlpArtifact::random(&[DIM, 16, 1], seed);
        self.publish_model(tenant, model, version, &m).await
    }

    /// Uploads `m`, registers it as the live version, and waits until every running
    /// router's snapshot has it.
    pub async fn publish_model(
        &self,
        tenant: &str,
        model: &str,
        version: &str,
        m: &MlpArtifact,
    ) -> Manifest {
        let manifest = publish(&self.store, &self.cp, tenant, model, version, m)
            .await
            .unwrap();
        let live = self
            .cp
            .read::<Value>(&Key::LiveVersion(manifest.key()))
            .await
            .unwrap()
            .expect("the live pointer was just written");
        self.wait_routers_at(live.mod_revision).await;
        manifest
    }

    /// Waits until every router that answers `/metrics` has a snapshot at `revision` or
    /// later (a stopped router is skipped).
    pub async fn wait_routers_at(&self, revision: i64) {
        for r in &self.routers {
            let what = format!("router {} at revision {revision}", r.id);
            eventually(&what, Duration::from_secs(30), || async {
                let Ok(resp) = self.http.get(&r.metrics_url).send().await else {
                    return true;
                };
                let text = resp.text().await.unwrap_or_default();
                crate::metric_sum(&text, CONTROL_SNAPSHOT_REVISION, None) >= revision as f64
            })
            .await;
        }
    }

    /// Creates `tenant` with shard size `k`, publishes its model `model` (version 1,
    /// weights from `seed`) and waits until the controller has placed it on `k` workers.
    /// Returns the tenant's API key.
    pub async fn placed_model(&self, tenant: &str, model: &str, k: u32, seed: u64) -> String {
        let key = self.tenant(tenant, Some(k)).await;
        self.publish(tenant, model, "1", seed).await;
        let shard_key = ModelKey::parse_shard_key(&format!("{tenant}/{model}")).unwrap();
        self.wait_assignment(&shard_key, Duration::from_secs(10), |a| {
            a.workers.len() == k as usize
        })
        .await;
        key
    }

    /// Waits until the stored assignment of `key` satisfies `ok`.
    pub async fn wait_assignment(
        &self,
        key: &ModelKey,
        within: Duration,
        ok: impl Fn(&Assignment) -> bool,
    ) -> Assignment {
        let what = format!("the assignment of {key} as expected");
        eventually(&what, within, || async {
            let stored = Key::Assignment(key.clone());
            let a = self.cp.read::<Assignment>(&stored).await.ok().flatten();
            a.filter(|a| ok(&a.value)).map(|a| a.value)
        })
        .await
    }
}
