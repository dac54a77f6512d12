//! Shardline's router: the authenticated Open Inference Protocol front door that maps a
//! tenant's request onto its shard of workers. The request path only: the placement
//! controller it runs is `shardline-controller`, the operator CLI is `shardline-shardctl`.
//!
//! Pure policy (no I/O, time passed in, property-tested):
//! - [`select`]: which shard member to try first (power of two choices) and the
//!   failover order;
//! - [`budget`]: the retry budget that keeps failover from becoming a retry storm;
//! - [`limiter`]: per-tenant in-flight and rate limits;
//! - [`inflight`]: the router's budget of request body bytes in flight.
//!
//! The inference service, independent of the transport:
//! - [`infer`]: authenticate ([`infer::auth`]) → resolve the model ([`mod@infer::resolve`])
//!   → admit → validate → choose members ([`infer::members`]) and forward with failover,
//!   retry budget and deadline ([`infer::forward`]) → relay the answer
//!   ([`infer::relay`]); generic over the [`upstream::Upstream`] that sends attempts;
//! - [`upstream`]: the `Upstream` seam and the pooled client to workers
//!   ([`upstream::WorkerClient`]); [`health`]: per-worker in-flight counts and passive
//!   ejection;
//! - [`state`], [`error`], [`metrics`], [`config`]: shared state, the status of every
//!   refusal, Prometheus metrics, flags.
//!
//! Transports, each calling [`infer::handle`]:
//! - [`http1`]: serving HTTP/1.1 connections — the accept loop and graceful shutdown
//!   (`http1`), the inference fast path on the connection (`http1::connection`), the
//!   hand-over to hyper for everything else (`http1::hand_over`); [`threads`]: the
//!   serving runtimes connections run on;
//! - [`routes`]: the public OIP v2 API as an axum router (`fn app(state) -> Router`);
//! - [`grpc`]: the OIP gRPC service and `grpc.health.v1` on `--grpc-listen` (HTTP/2,
//!   plain or TLS), converting to and from the JSON body workers take;
//! - [`codec`]: the HTTP/1.1 byte codec (request-head classification, inference paths,
//!   header names, answer heads, `Date`), a leaf that imports nothing from the router.
//!
//! [`serve`]: wiring it together with etcd, `/metrics` and graceful shutdown.

pub mod budget;
pub mod codec;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http1;
pub mod infer;
pub mod inflight;
pub mod limiter;
pub mod metrics;
pub mod routes;
pub mod select;
pub mod serve;
pub mod shadow;
pub mod state;
pub mod threads;
pub mod tls;
pub mod upstream;
