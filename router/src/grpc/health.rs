//! `grpc.health.v1.Health` on the gRPC listener: SERVING while the router is ready (a
//! snapshot read and a live worker, as `/v2/health/ready`), NOT_SERVING otherwise, for
//! the whole server (`""`) and for `inference.GRPCInferenceService`; other services are
//! unknown (`Check`: NOT_FOUND; `Watch`: SERVICE_UNKNOWN). `Watch` sends the status,
//! then each change as the snapshot moves, until the client leaves.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::health_pb::health_check_response::ServingStatus;
use super::health_pb::health_server::Health;
use super::health_pb::{HealthCheckRequest, HealthCheckResponse};
use super::meta::server_ready;
use crate::state::AppState;
use crate::upstream::{Upstream, WorkerClient};

/// The services this listener reports on.
pub const SERVICES: [&str; 2] = ["", "inference.GRPCInferenceService"];

/// The health service over the router's shared state.
#[derive(Debug)]
pub struct HealthService<U = WorkerClient> {
    state: Arc<AppState<U>>,
}

impl<U> HealthService<U> {
    pub fn new(state: Arc<AppState<U>>) -> Self {
        Self { state }
    }
}

fn status(ready: bool) -> HealthCheckResponse {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status.into(),
    }
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<U: Upstream> Health for HealthService<U> {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(status(server_ready(&self.state.snapshot()))))
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            let unknown = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown.into(),
            };
            let stream =
                futures::stream::once(async move { Ok(unknown) }).chain(futures::stream::pending());
            return Ok(Response::new(Box::pin(stream)));
        }
        let rx = self.state.snapshot.clone();
        let stream = futures::stream::unfold((rx, None), |(mut rx, last)| async move {
            loop {
                let ready = server_ready(&rx.borrow_and_update());
                if last != Some(ready) {
                    return Some((Ok(status(ready)), (rx, Some(ready))));
                }
                rx.changed().await.ok()?;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
