//! Serving the gRPC listener: HTTP/2 connections (plain, or TLS with ALPN `h2` and the
//! router's reloadable certificate) under the same limits as HTTP — the open-connection
//! gate it shares with the HTTP listener (`--max-connections`), a client that opens no
//! stream within `--header-timeout` of its accept (or of the TLS handshake's start), or
//! none within `--idle-timeout` of its last answer, is closed; HTTP/2 pings find clients
//! that are gone or stop reading (`--grpc-keepalive-*`); at most
//! `--grpc-max-concurrent-streams` streams per connection, `--max-header-bytes` of
//! headers, messages of at most `--max-body`; a call whose message does not arrive and
//! get its answer within `--body-timeout` plus the time `--body-min-rate` allows for
//! `--max-body`, plus `--max-deadline`, is cut off with DEADLINE_EXCEEDED. Graceful
//! shutdown like HTTP's: stop accepting, tell every connection to finish (GOAWAY), close
//! those still open after `--shutdown-grace`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use shardline_service::conn::{ConnGate, ConnLimits, ConnSlot, Reason, accept};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tower::ServiceExt as _;
use tracing::debug;

use super::args::GrpcArgs;
use super::health::HealthService;
use super::health_pb::health_server::HealthServer;
use super::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::service::InferenceService;
use super::status::from_router_error;
use crate::error::RouterError;
use crate::state::AppState;
use crate::threads::ServingPool;
use crate::upstream::Upstream;

/// How the gRPC listener serves its connections.
#[derive(Clone)]
pub struct GrpcServing {
    /// Shared with the HTTP listener: one limit on client connections.
    pub gate: Arc<ConnGate>,
    pub limits: ConnLimits,
    pub args: GrpcArgs,
    /// TLS (`--tls-cert`, ALPN `h2`), or plain HTTP/2.
    pub tls: Option<TlsAcceptor>,
    /// Longest a call may take from its first byte to its answer.
    pub call_limit: Duration,
}

impl std::fmt::Debug for GrpcServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServing")
            .field("limits", &self.limits)
            .field("args", &self.args)
            .field("tls", &self.tls.is_some())
            .field("call_limit", &self.call_limit)
            .finish_non_exhaustive()
    }
}

/// The gRPC services over the router's state: `inference.GRPCInferenceService` taking
/// messages of at most `max_message` bytes, and `grpc.health.v1.Health`. Any other
/// service or method answers UNIMPLEMENTED.
pub fn routes<U: Upstream>(state: Arc<AppState<U>>, max_message: usize) -> Routes {
    let infer = GrpcInferenceServiceServer::new(InferenceService::new(state.clone()))
        .max_decoding_message_size(max_message);
    Routes::new(infer).add_service(HealthServer::new(HealthService::new(state)))
}

/// Serves `listener` until `shutdown` completes, then lets open connections finish their
/// calls, closing those still open after the shutdown grace period. Connections run on
/// the threads of `pool` (without one, on the caller's runtime), each on one thread.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    serving: GrpcServing,
    shutdown: impl Future<Output = ()>,
    pool: Option<Arc<ServingPool>>,
) {
    // Every connection holds a receiver: `closed()` tells when the last one ended.
    let (stop, stopping) = watch::channel(false);
    let (abort, aborted) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut next = 0usize;
    while let Some((stream, peer, slot)) = accept(&listener, &serving.gate, shutdown.as_mut()).await
    {
        let conn = Conn {
            routes: routes.clone(),
            serving: serving.clone(),
            slot,
            stopping: stopping.clone(),
            aborted: aborted.clone(),
            accepted: Instant::now(),
        };
        let Some(pool) = &pool else {
            tokio::spawn(conn.run(stream));
            continue;
        };
        // A socket belongs to one runtime's reactor: move it over as a std socket.
        match stream.into_std() {
            Ok(stream) => {
                pool.handle(pool.home(next)).spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => conn.run(stream).await,
                        Err(e) => debug!(%peer, error = %e, "cannot register the connection"),
                    }
                });
            }
            Err(e) => debug!(%peer, error = %e, "cannot hand the connection over"),
        }
        next = next.wrapping_add(1);
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    let grace = serving.limits.shutdown_grace;
    if tokio::time::timeout(grace, stop.closed()).await.is_err() {
        let _ = abort.send(true);
        stop.closed().await;
    }
}

/// One accepted connection.
struct Conn {
    routes: Routes,
    serving: GrpcServing,
    slot: ConnSlot,
    stopping: watch::Receiver<bool>,
    aborted: watch::Receiver<bool>,
    accepted: Instant,
}

impl Conn {
    async fn run(self, stream: TcpStream) {
        let Some(tls) = self.serving.tls.clone() else {
            return self.serve(stream).await;
        };
        let until = self.accepted + self.serving.limits.header_timeout;
        match tokio::time::timeout_at(until, tls.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
            Err(_) => self.slot.gate().closed(Reason::HeaderTimeout),
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: S) {
        let (activity, watched) = watch::channel(Activity {
            calls: 0,
            since: self.accepted,
            served: false,
        });
        let calls = Calls {
            routes: self.routes.clone(),
            activity: Arc::new(activity),
            limit: self.serving.call_limit,
        };
        let (args, limits) = (&self.serving.args, &self.serving.limits);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(args.grpc_max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(args.grpc_keepalive_interval)
            .keep_alive_timeout(args.grpc_keepalive_timeout);
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), calls));
        // Once told to finish: how long the client has to let it end.
        let mut closing: Option<Instant> = None;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        debug!(error = %e, "gRPC connection ended with an error");
                    }
                    return;
                }
                reason = idle(watched.clone(), limits), if closing.is_none() => {
                    self.slot.gate().closed(reason);
                    if matches!(reason, Reason::HeaderTimeout) {
                        // No call ever began (perhaps not even the preface): nothing to
                        // let finish, so no GOAWAY and no wait for the client to close.
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + limits.write_timeout);
                }
                _ = self.stopping.wait_for(|s| *s), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + limits.shutdown_grace);
                }
                () = sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => return,
                _ = self.aborted.wait_for(|a| *a) => {
                    debug!("closed at the end of the shutdown grace period");
                    self.slot.gate().closed(Reason::Shutdown);
                    return;
                }
            }
        }
    }
}

/// Calls in progress on a connection, and since when it has had none.
#[derive(Debug, Clone, Copy)]
struct Activity {
    calls: usize,
    since: Instant,
    /// Whether a call has begun (past it the idle timeout applies, before it the header
    /// timeout).
    served: bool,
}

/// Completes, with the reason, once the connection has had no call for too long.
async fn idle(mut watched: watch::Receiver<Activity>, limits: &ConnLimits) -> Reason {
    loop {
        let now = *watched.borrow_and_update();
        if now.calls > 0 {
            if watched.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        let (after, reason) = if now.served {
            (limits.idle_timeout, Reason::IdleTimeout)
        } else {
            (limits.header_timeout, Reason::HeaderTimeout)
        };
        tokio::select! {
            () = sleep_until(now.since + after) => return reason,
            changed = watched.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// The gRPC routes as a hyper service: counts the calls in progress and cuts off a call
/// past the limit.
#[derive(Clone)]
struct Calls {
    routes: Routes,
    activity: Arc<watch::Sender<Activity>>,
    limit: Duration,
}

/// One call in progress, until dropped.
struct InCall(Arc<watch::Sender<Activity>>);

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.calls -= 1;
            a.since = Instant::now();
        });
    }
}

type Answer = http::Response<tonic::body::Body>;

impl hyper::service::Service<http::Request<Incoming>> for Calls {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.activity.send_modify(|a| {
            a.calls += 1;
            a.served = true;
        });
        let call = InCall(self.activity.clone());
        let (routes, limit) = (self.routes.clone(), self.limit);
        Box::pin(async move {
            let _call = call;
            match tokio::time::timeout(limit, routes.oneshot(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok(from_router_error(&RouterError::BodyTimeout).into_http()),
            }
        })
    }
}
