//! Serving the public API over HTTP/1.1: the accept loop, which admits at most
//! `--max-connections` (one more is accepted and closed at once) and hands each
//! connection to one of the router's single-threaded serving runtimes (moved between
//! them as [`crate::threads`] decides, between two requests), and graceful shutdown —
//! stop accepting, close idle connections, let in-flight requests finish, close what is
//! still busy after `--shutdown-grace`. One connection's life is `connection`'s: the hot
//! request — a plain inference `POST` — read, handed to the inference service (its body,
//! `body`, read only once the request is authenticated and admitted) and answered right
//! on the connection, every wait on the client under a deadline (`deadline`); the first
//! request it does not take goes, with the rest of the connection, to hyper and axum
//! under the same limits (`hand_over`).
//!
//! Why not hyper for every request: on two cores every microsecond the router spends
//! comes out of the workers' share, and hyper's server and axum's router cost more per
//! request in header maps, boxed bodies, extension maps, URI copies and allocations (see
//! docs/benchmarks.md, section Router hop). The fast path parses the head with
//! `httparse`, takes the body as a slice of the read buffer, and writes the answer head
//! itself ([`crate::codec`]). The first request it does not take (another route, chunked
//! body, `Expect`, HTTP/1.0, anything malformed — see [`crate::codec::classify`]) hands
//! the connection, with the bytes already read, to hyper for the rest of its life, so the
//! fast path never has to answer what it does not fully understand.

mod body;
mod connection;
mod deadline;
mod hand_over;
mod transport;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use shardline_service::conn::{ConnGate, HyperConn, Reason, accept, close_after_grace};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use self::connection::Connection;

use crate::state::AppState;
use crate::threads::ServingPool;

/// What a connection over the limit is told before it is closed.
pub use shardline_service::conn::BUSY;

/// How connections are served: hyper configured with the connection limits (for the
/// requests the fast path hands over; the fast path reads the same limits from it) and
/// the gate counting open connections against `--max-connections`.
#[derive(Clone)]
pub struct Serving {
    pub hyper: HyperConn,
    pub gate: Arc<ConnGate>,
    /// TLS on the listener (`--tls-cert`), or plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("hyper", &self.hyper)
            .field("gate", &self.gate)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves `listener` until `shutdown` completes, then waits for open connections to
/// finish their current request, closing those still busy after the shutdown grace
/// period. At most the gate's limit of connections are open at once: one more is
/// accepted and closed at once (told [`BUSY`] if its socket takes it), so descriptors
/// stay for the connections to workers. Accepted connections go to the threads of
/// `pool` that take connections (each a single-threaded runtime, like nginx's worker
/// processes: no work stealing, no cross-thread wake-ups within a connection); without
/// a pool they run on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    pool: Option<Arc<ServingPool>>,
    serving: Serving,
) {
    let graceful = GracefulShutdown::new();
    let (stop, stopping) = watch::channel(false);
    let (abort, aborted) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    while let Some((stream, peer, slot)) = accept(&listener, &serving.gate, shutdown.as_mut()).await
    {
        let conn = Connection {
            state: state.clone(),
            app: app.clone(),
            hyper: serving.hyper.clone(),
            limits: *serving.hyper.limits(),
            slot,
            watcher: graceful.watcher(),
            stopping: stopping.clone(),
            aborted: aborted.clone(),
            peer,
            id: next,
            accepted: Some(Instant::now()),
            pool: pool.clone(),
            tls: serving.tls.clone(),
        };
        next = next.wrapping_add(1);
        let Some(pool) = &pool else {
            tokio::spawn(start(conn, stream));
            continue;
        };
        // A socket belongs to one runtime's reactor: move it over as a std socket and
        // register it there.
        match stream.into_std() {
            Ok(stream) => start_on(pool.clone(), pool.home(conn.id), conn, stream),
            Err(e) => debug!(%peer, error = %e, "cannot hand the connection over"),
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Waits for every connection (each holds a watcher) to end.
    close_after_grace(graceful, serving.hyper.limits().shutdown_grace, abort).await;
}

/// Serves `conn` on this thread: over TLS once its handshake is done (within the header
/// timeout from its accept, like a request head; a TLS connection never moves), or
/// over plain TCP until it ends or moves.
async fn start(
    mut conn: Connection,
    stream: TcpStream,
) -> Option<(Connection, std::net::TcpStream, usize)> {
    let gate = conn.gate();
    let Some(tls) = conn.tls.take() else {
        return run_until_aborted(conn, stream, gate).await;
    };
    let until = conn.accepted.unwrap_or_else(Instant::now) + conn.limits.header_timeout;
    match tokio::time::timeout_at(until, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            // It cannot move: nothing comes back.
            let _ = run_until_aborted(conn, stream, gate).await;
        }
        Ok(Err(e)) => debug!(peer = %conn.peer, error = %e, "TLS handshake failed"),
        Err(_) => gate.closed(Reason::HeaderTimeout),
    }
    None
}

/// Serves `conn` until it ends or moves (returned with its socket and the thread it
/// moves to), or until the shutdown grace period ends.
async fn run_until_aborted<S: transport::Transport>(
    conn: Connection,
    stream: S,
    gate: Arc<ConnGate>,
) -> Option<(Connection, std::net::TcpStream, usize)> {
    let mut aborted = conn.aborted.clone();
    let peer = conn.peer;
    tokio::select! {
        moved = conn.run(stream) => moved,
        _ = aborted.wait_for(|a| *a) => {
            debug!(%peer, "closed at the end of the shutdown grace period");
            gate.closed(Reason::Shutdown);
            None
        }
    }
}

/// Serves `conn` on serving thread `target` of `pool`, and on the next one it moves to
/// after that.
fn start_on(pool: Arc<ServingPool>, target: usize, conn: Connection, stream: std::net::TcpStream) {
    let runtime = pool.handle(target).clone();
    runtime.spawn(async move {
        let peer = conn.peer;
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => return debug!(%peer, error = %e, "cannot register the connection"),
        };
        if let Some((conn, stream, next)) = start(conn, stream).await {
            pool.moved();
            start_on(pool, next, conn, stream);
        }
    });
}

/// Connections moving between serving threads, against a router with an empty
/// snapshot (every inference is refused on the fast path with 401: no worker needed).
#[cfg(test)]
mod moves {
    use std::time::Duration;

    use prometheus::Registry;
    use shardline_shared::keys::Prefix;
    use shardline_shared::snapshot::Snapshot;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use shardline_service::conn::{ConnLimits, ConnMetrics};

    use super::*;
    use crate::budget::RetryBudget;
    use crate::metrics::RouterMetrics;
    use crate::state::Limits;
    use crate::upstream::WorkerClient;

    const REQUEST: &[u8] = b"POST /v2/models/risk/infer HTTP/1.1\r\nhost: r\r\n\
        authorization: Bearer nobody\r\ncontent-type: application/json\r\n\
        content-length: 2\r\n\r\n{}";

    fn state() -> Arc<AppState> {
        let (_, snapshot) = watch::channel(Arc::new(Snapshot::empty(Prefix::default())));
        Arc::new(AppState::new(
            snapshot,
            WorkerClient::new("token-0123456789abcdef").unwrap(),
            RetryBudget::new(200, 10, Duration::from_secs(10)),
            Limits {
                max_body: 1 << 20,
                max_rows: 16,
                default_deadline: Duration::from_secs(10),
                max_deadline: Duration::from_secs(60),
                attempt_timeout: Duration::from_secs(1),
                max_inflight_bytes: 1 << 30,
            },
            RouterMetrics::register(&Registry::new(), false).unwrap(),
        ))
    }

    /// Reads `n` whole answers (each ends with its JSON body's closing brace), returning
    /// their status lines.
    async fn answers(conn: &mut TcpStream, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.iter().filter(|&&b| b == b'}').count() < n {
            let k = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("answer in time")
                .unwrap();
            assert!(
                k > 0,
                "connection closed after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..k]);
        }
        // A body has no line end: the next answer's status line follows it directly.
        let text = String::from_utf8(got).unwrap();
        text.match_indices("HTTP/1.1 ")
            .map(|(i, _)| text[i..].lines().next().unwrap().to_owned())
            .collect()
    }

    async fn wait_moves(pool: &ServingPool, n: u64) {
        for _ in 0..500 {
            if pool.moves() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.moves(), n);
    }

    #[tokio::test]
    async fn connections_move_between_requests_and_keep_being_served() {
        let pool = ServingPool::start(2, 1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = state();
        let app = crate::routes::app(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            state,
            app,
            async move {
                let _ = stopped.await;
            },
            Some(pool.clone()),
            Serving {
                hyper: HyperConn::new(ConnLimits::for_tests()),
                gate: ConnGate::new(100, ConnMetrics::unregistered()),
                tls: None,
            },
        ));
        // Accept order 0 and 1: both on thread 0 while one thread is active.
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(REQUEST).await.unwrap();
        assert_eq!(answers(&mut a, 1).await.len(), 1);
        let mut b = TcpStream::connect(addr).await.unwrap();
        b.write_all(REQUEST).await.unwrap();
        assert_eq!(answers(&mut b, 1).await, ["HTTP/1.1 401 Unauthorized"]);
        assert_eq!(pool.moves(), 0);

        // Two active threads: `b` (id 1) belongs on thread 1 and moves there at its next
        // request boundary, which comes after the answer to this pipelined pair.
        pool.set_active(2);
        b.write_all(&[REQUEST, REQUEST].concat()).await.unwrap();
        assert_eq!(answers(&mut b, 2).await.len(), 2);
        wait_moves(&pool, 1).await;
        // Served on its new thread; `a` (id 0) stays.
        for _ in 0..3 {
            b.write_all(REQUEST).await.unwrap();
            assert_eq!(answers(&mut b, 1).await, ["HTTP/1.1 401 Unauthorized"]);
            a.write_all(REQUEST).await.unwrap();
            assert_eq!(answers(&mut a, 1).await.len(), 1);
        }
        assert_eq!(pool.moves(), 1);

        // Back to one thread: `b` returns to thread 0.
        pool.set_active(1);
        b.write_all(REQUEST).await.unwrap();
        assert_eq!(answers(&mut b, 1).await.len(), 1);
        wait_moves(&pool, 2).await;
        b.write_all(REQUEST).await.unwrap();
        assert_eq!(answers(&mut b, 1).await.len(), 1);

        // Shutdown still closes every connection, moved or not.
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops")
            .unwrap();
        for c in [&mut a, &mut b] {
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
                .await
                .expect("closed")
                .unwrap();
            assert_eq!(n, 0);
        }
    }
}
