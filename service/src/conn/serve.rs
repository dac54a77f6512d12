//! Serving connections with hyper and an axum app under the connection limits: one
//! connection ([`serve_connection`], also the router's hand-over) or a whole listener
//! ([`serve_app`], the worker's server: the limit on open connections, graceful
//! shutdown, and connections still busy after the grace period closed anyway).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::debug;

use super::{ConnGate, ConnLimits, ConnSlot, Guarded, Phase, Reason};

/// What a connection over the limit is told before it is closed (best effort: written
/// only if the socket takes it at once).
pub const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 32\r\n\r\n{\"error\":\"too many connections\"}";

#[cfg(test)]
#[test]
fn busy_is_one_whole_answer() {
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut answer = httparse::Response::new(&mut headers);
    let head = answer.parse(BUSY).unwrap().unwrap();
    assert_eq!(answer.code, Some(503));
    let length = answer
        .headers
        .iter()
        .find(|h| h.name == "content-length")
        .unwrap();
    assert_eq!(
        std::str::from_utf8(length.value).unwrap(),
        (BUSY.len() - head).to_string()
    );
}

/// A hyper HTTP/1.1 server configured with the limits' head size and count.
#[derive(Debug, Clone)]
pub struct HyperConn {
    builder: http1::Builder,
    limits: ConnLimits,
}

impl HyperConn {
    pub fn new(limits: ConnLimits) -> Self {
        let mut builder = http1::Builder::new();
        builder
            .max_buf_size(
                limits
                    .max_header_bytes
                    .max(super::MIN_HEADER_BYTES as usize),
            )
            .max_header_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            // One write per answer: head and (small) body copied into one buffer.
            .writev(false);
        Self { builder, limits }
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }
}

/// Serves `io` with hyper and `app` until the connection ends, its slot held until
/// then; `since` is when its first request began (its accept, or the first byte the
/// caller already read). Graceful shutdown reaches it through `watcher`.
pub async fn serve_connection<S>(
    conn: &HyperConn,
    io: S,
    app: Router,
    slot: Option<ConnSlot>,
    since: Instant,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Phase::new(since);
    let io = TokioIo::new(Guarded::new(io, phase.clone(), conn.limits, slot));
    let connection = conn.builder.serve_connection(io, Axum { app, phase });
    if let Err(e) = watcher.watch(connection).await {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Connections the kernel queues for a listener before they are accepted (capped by
/// `net.core.somaxconn`). The usual default of 128 overflows in a burst of new
/// connections — a flood, or clients reconnecting together after a restart — and an
/// overflowed handshake is completed only when the client's retransmission comes, 1 to
/// 15 s later, while the client already believes it is connected.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection accepted on `listener` with its slot under `gate`, or `None`
/// once `shutdown` completes. A connection past the limit is told [`BUSY`] and closed
/// at once; a failed accept (out of descriptors and the like) backs off for 50 ms
/// instead of spinning. Accepted connections have `TCP_NODELAY` set.
pub async fn accept(
    listener: &TcpListener,
    gate: &Arc<ConnGate>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr, ConnSlot)> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return None,
        };
        let Some(slot) = gate.try_enter() else {
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        return Some((stream, peer, slot));
    }
}

/// Serves `app` on `listener` until `shutdown` completes: at most `gate`'s limit of
/// connections at once (one more is accepted and closed at once, told [`BUSY`]), each
/// under `conn`'s limits. Then stops accepting, lets requests in flight finish, and
/// closes whatever is still open after `--shutdown-grace`.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    conn: HyperConn,
    gate: Arc<ConnGate>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let (abort, aborted) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some((stream, peer, slot)) = accept(&listener, &gate, shutdown.as_mut()).await {
        let (conn, app, watcher) = (conn.clone(), app.clone(), graceful.watcher());
        let mut aborted = aborted.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let since = Instant::now();
            tokio::select! {
                () = serve_connection(&conn, stream, app, Some(slot), since, watcher) => {}
                _ = aborted.wait_for(|a| *a) => {
                    debug!(%peer, "closed at the end of the shutdown grace period");
                    gate.closed(Reason::Shutdown);
                }
            }
        });
    }
    drop(listener);
    close_after_grace(graceful, conn.limits.shutdown_grace, abort).await;
}

/// Waits for every watched connection to end, telling those still open after `grace`
/// to close through `abort`.
pub async fn close_after_grace(
    graceful: GracefulShutdown,
    grace: std::time::Duration,
    abort: watch::Sender<bool>,
) {
    let all_done = graceful.shutdown();
    let mut all_done = std::pin::pin!(all_done);
    if tokio::time::timeout(grace, &mut all_done).await.is_err() {
        let _ = abort.send(true);
        all_done.await;
    }
}

/// axum's router as a hyper service, marking the connection's [`Phase`] as each
/// request starts and is answered.
#[derive(Clone)]
struct Axum {
    app: Router,
    phase: Arc<Phase>,
}

type AxumFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Axum {
    type Response = Response;
    type Error = Infallible;
    type Future = AxumFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let (app, phase) = (self.app.clone(), self.phase.clone());
        phase.request_started();
        Box::pin(async move {
            let response = app.oneshot(request.map(Body::new)).await;
            phase.answered();
            response
        })
    }
}
