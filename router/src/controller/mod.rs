//! The placement controller (temporary stand-in until the controller lands).

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use shardline_control::ControlPlane;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub id: String,
    pub internal_token: String,
    pub lease_ttl: Duration,
    pub prefetch_timeout: Duration,
    pub previous_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ControllerMetrics;

impl ControllerMetrics {
    pub fn register(_registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self)
    }
}

#[derive(Debug)]
pub struct Controller;

impl Controller {
    pub fn spawn(
        _cp: ControlPlane,
        _snapshots: watch::Receiver<Arc<Snapshot>>,
        _config: ControllerConfig,
        _metrics: ControllerMetrics,
    ) -> Self {
        Self
    }

    pub async fn shutdown(self) {}
}
