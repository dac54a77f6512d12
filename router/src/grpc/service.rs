//! `inference.GRPCInferenceService` on the router: health and metadata from the
//! snapshot ([`super::meta`]), and `ModelInfer` through the inference service
//! ([`crate::infer::handle`]) with the request converted to the JSON body workers take
//! and the worker's answer converted back ([`super::convert`]). The key comes from the
//! `authorization` metadata, the deadline from `grpc-timeout` (else
//! `x-shardline-deadline-ms`); refusals carry the HTTP path's messages
//! ([`super::status`]).

use std::sync::Arc;

use http::StatusCode;
use shardline_shared::decode::InputSpec;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::convert::{from_json, json_bound, to_json};
use super::meta;
use super::pb::grpc_inference_service_server::GrpcInferenceService;
use super::pb::*;
use super::status::{deadline_ms, from_router_error, from_worker_answer, parse_grpc_timeout};
use crate::codec::{DEADLINE_HEADER, ROUTE_KEY_HEADER, WORKER_HEADER};
use crate::error::RouterError;
use crate::infer::resolve::Unpinned;
use crate::infer::{self, InferRequest, KeyMemo, authenticate, resolve};
use crate::state::AppState;
use crate::upstream::{Upstream, WorkerClient};

/// The OIP gRPC service over the router's shared state.
#[derive(Debug)]
pub struct InferenceService<U = WorkerClient> {
    state: Arc<AppState<U>>,
}

impl<U> InferenceService<U> {
    pub fn new(state: Arc<AppState<U>>) -> Self {
        Self { state }
    }
}

fn authorization(metadata: &MetadataMap) -> Option<&[u8]> {
    metadata.get("authorization").map(|v| v.as_bytes())
}

/// An empty version field means the live version.
fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

impl<U: Upstream> InferenceService<U> {
    /// The manifest of the model a metadata request names, for its key's tenant.
    fn model<T>(
        &self,
        request: &Request<T>,
        name: &str,
        v: &str,
    ) -> Result<(ModelMetadataResponse, bool), Status> {
        let snap = self.state.snapshot();
        let found = authenticate(&snap, authorization(request.metadata()))
            .and_then(|tenant| resolve(&snap, &tenant, name, version(v), None))
            .map(|(key, m)| {
                (
                    meta::model_metadata(&snap, &key, m),
                    meta::model_live(&snap, &key),
                )
            });
        found.map_err(|e| from_router_error(&e))
    }
}

#[tonic::async_trait]
impl<U: Upstream> GrpcInferenceService for InferenceService<U> {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = meta::server_ready(&self.state.snapshot());
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let m = request.get_ref();
        let (_, ready) = self.model(&request, &m.name, &m.version)?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: meta::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: meta::EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let m = request.get_ref();
        let (metadata, _) = self.model(&request, &m.name, &m.version)?;
        Ok(Response::new(metadata))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let state = &*self.state;
        let deadline = match metadata.get("grpc-timeout") {
            Some(v) => Some(
                parse_grpc_timeout(v.as_bytes())
                    .map(|d| deadline_ms(d).to_string())
                    .ok_or_else(|| Status::invalid_argument("grpc-timeout is not a timeout"))?,
            ),
            None => None,
        };
        let deadline = match &deadline {
            Some(ms) => Some(ms.as_bytes()),
            None => metadata.get(DEADLINE_HEADER).map(|v| v.as_bytes()),
        };
        let auth = authorization(&metadata);
        let route_key = metadata.get(ROUTE_KEY_HEADER).map(|v| v.as_bytes());
        let unpinned = Unpinned {
            route_key,
            draw: fastrand::u64(..),
        };
        // What the body must hold, looked up ahead of the inference service, which
        // authenticates and resolves again (the memo spares it the key's digest) and
        // refuses exactly as over HTTP before the body is converted.
        let snap = state.snapshot();
        let mut keys = KeyMemo::default();
        let manifest = keys
            .tenant(&snap, auth)
            .and_then(|t| {
                resolve(
                    &snap,
                    &t,
                    &message.model_name,
                    version(&message.model_version),
                    Some(unpinned),
                )
            })
            .ok()
            .map(|(_, m)| m);
        // The version chosen here (live or a canary's) is the one served: the body is
        // converted for it.
        let pinned = manifest.map(|m| m.version.clone());
        let body = async {
            let manifest = manifest.ok_or_else(|| {
                RouterError::Unavailable(
                    "the model changed while the request was read; retry".into(),
                )
            })?;
            let spec = InputSpec::for_model(&manifest.config, state.limits.max_rows);
            Ok(to_json(&message, &spec, state.limits.max_body)?.body)
        };
        let request = InferRequest {
            name: &message.model_name,
            version: version(&message.model_version),
            chosen: pinned.as_ref().map(|v| v.as_str()),
            authorization: auth,
            route_key,
            deadline,
            // The converted body is all JSON (no binary tensor data).
            header_length: None,
            content_length: Some(json_bound(&message)),
        };
        let relay = infer::handle(state, request, body, &mut keys)
            .await
            .map_err(|e| from_router_error(&e))?;
        if relay.answer.status != StatusCode::OK {
            return Err(from_worker_answer(&relay.answer));
        }
        let raw = !message.raw_input_contents.is_empty();
        let answer = from_json(&relay.answer.body, raw).map_err(Status::internal)?;
        let mut response = Response::new(answer);
        if let Some(v) = relay
            .worker
            .as_ref()
            .and_then(|v| MetadataValue::try_from(v.as_bytes()).ok())
        {
            response.metadata_mut().insert(WORKER_HEADER, v);
        }
        Ok(response)
    }
}
