//! Serving the public API over HTTP/1.1: one task per connection on one of the
//! router's single-threaded serving runtimes (moved between them as
//! [`crate::threads`] decides, between two requests); the hot request — a plain inference
//! `POST` — read, scored and answered right on the connection, everything else served
//! by hyper and axum; graceful shutdown stops accepting, closes idle connections and
//! lets in-flight requests finish.
//!
//! Why not hyper for every request: on two cores every microsecond the router spends
//! comes out of the workers' share, and nginx — the baseline a proxy hop is measured
//! against — spends about 35 µs of CPU per proxied request. hyper's server and axum's
//! router cost several µs more per request in header maps, boxed bodies, extension
//! maps, URI copies and allocations. The fast path parses the head with `httparse`,
//! takes the body as a slice of the read buffer, and writes the answer head itself
//! ([`crate::wire`]). The first request it does not take (another route, chunked body,
//! `Expect`, HTTP/1.0, anything malformed — see [`wire::classify`]) hands the
//! connection, with the bytes already read, to hyper for the rest of its life, so the
//! fast path never has to answer what it does not fully understand.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use bytes::{Buf as _, Bytes, BytesMut};
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;
use tracing::debug;

use crate::routes::{self, Inference, KeyMemo};
use crate::state::AppState;
use crate::threads::{self, ServingPool};
use crate::wire;

/// Largest request head the fast path waits for before leaving the connection to hyper.
const MAX_HEAD: usize = 64 << 10;
/// Headers the fast path reads; a request with more is hyper's.
const MAX_HEADERS: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 << 10;
/// Answer bodies up to this size are copied behind their head and sent in one write.
const COALESCE: usize = 16 << 10;

/// The model and version named by an inference path: `/v2/models/{model}/infer` or
/// `/v2/models/{model}/versions/{version}/infer`. `None` for any other path, and for
/// paths whose segments would need percent-decoding (those take the general route).
pub fn infer_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let plain = |s: &str| !s.is_empty() && !s.contains('%');
    let mut segments = rest.split('/');
    let model = segments.next().filter(|m| plain(m))?;
    match (segments.next(), segments.next(), segments.next()) {
        (None, _, _) => Some((model, None)),
        (Some("versions"), Some(version), None) if plain(version) => Some((model, Some(version))),
        _ => None,
    }
}

/// Serves `listener` until `shutdown` completes, then waits for open connections to
/// finish their current request. Accepted connections go to the threads of `pool` that
/// take connections (each a single-threaded runtime, like nginx's worker processes: no
/// work stealing, no cross-thread wake-ups within a connection); without a pool they
/// run on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    pool: Option<Arc<ServingPool>>,
) {
    let graceful = GracefulShutdown::new();
    let (stop, stopping) = watch::channel(false);
    let mut builder = http1::Builder::new();
    // One write per answer: head and (small) body copied into one buffer.
    builder.writev(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            state: state.clone(),
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            stopping: stopping.clone(),
            peer,
            id: next,
            pool: pool.clone(),
        };
        next = next.wrapping_add(1);
        let Some(pool) = &pool else {
            tokio::spawn(async move {
                conn.run(stream).await;
            });
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
    graceful.shutdown().await;
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
        if let Some((conn, stream, next)) = conn.run(stream).await {
            pool.moved();
            start_on(pool, next, conn, stream);
        }
    });
}

/// One accepted connection and what serving it needs.
struct Connection {
    state: Arc<AppState>,
    app: Router,
    builder: http1::Builder,
    /// Held while the connection is open: graceful shutdown waits for it.
    watcher: Watcher,
    /// Becomes `true` when the router stops accepting.
    stopping: watch::Receiver<bool>,
    peer: SocketAddr,
    /// Accept order: which of the pool's active threads the connection belongs on.
    id: usize,
    pool: Option<Arc<ServingPool>>,
}

/// Where a fast-path request's parts lie in the read buffer.
struct Spans {
    head_len: usize,
    content_length: usize,
    model: Range<usize>,
    version: Option<Range<usize>>,
    authorization: Option<Range<usize>>,
    deadline: Option<Range<usize>>,
    close: bool,
}

/// What the next request on a connection is.
enum Next {
    /// The connection ended (closed, broken, or idle at shutdown).
    Closed,
    /// A request hyper serves (see [`wire::classify`]).
    Other,
    Infer(Spans),
    /// Between requests, on the wrong serving thread: move to this one.
    Move(usize),
}

impl Connection {
    /// Serves the connection until it ends, or returns it, its socket released by this
    /// thread's reactor, when it is to move to the serving thread returned with it.
    async fn run(mut self, mut stream: TcpStream) -> Option<(Self, std::net::TcpStream, usize)> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(1024);
        let mut keys = KeyMemo::default();
        loop {
            let spans = match self.next_request(&mut stream, &mut buf).await {
                Next::Closed => return None,
                Next::Other => {
                    self.hand_over(stream, buf).await;
                    return None;
                }
                Next::Move(target) => {
                    return match stream.into_std() {
                        Ok(stream) => Some((self, stream, target)),
                        Err(e) => {
                            debug!(peer = %self.peer, error = %e, "cannot move the connection");
                            None
                        }
                    };
                }
                Next::Infer(spans) => spans,
            };
            let total = spans.head_len + spans.content_length;
            while buf.len() < total {
                buf.reserve(total - buf.len());
                if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    return None;
                }
            }
            let request = buf.split_to(total).freeze();
            let (body, close) = self.score(&request, spans, &mut keys, &mut out).await;
            let written = if body.len() <= COALESCE {
                out.extend_from_slice(&body);
                stream.write_all(&out).await
            } else {
                match stream.write_all(&out).await {
                    Ok(()) => stream.write_all(&body).await,
                    e => e,
                }
            };
            if written.is_err() {
                return None;
            }
            if close {
                let _ = stream.shutdown().await;
                return None;
            }
        }
    }

    /// Reads until `buf` holds a complete request head and says what it is.
    async fn next_request(&mut self, stream: &mut TcpStream, buf: &mut BytesMut) -> Next {
        loop {
            if !buf.is_empty() {
                // Uninitialised: filling 64 empty headers per request costs more than
                // parsing a typical head.
                let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(buf, &mut headers) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        return match wire::classify(&req, self.state.limits.max_body) {
                            Some(head) => Next::Infer(spans(buf, head_len, &head)),
                            None => Next::Other,
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                    // Malformed or oversized: hyper gives the answer it gives.
                    _ => return Next::Other,
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read = if buf.is_empty() {
                // Between requests is the only point where shutdown closes a connection.
                if *self.stopping.borrow() {
                    return Next::Closed;
                }
                if let Some(target) = self.elsewhere() {
                    return Next::Move(target);
                }
                tokio::select! {
                    read = stream.read_buf(buf) => read,
                    changed = self.stopping.changed() => {
                        if changed.is_err() {
                            return Next::Closed;
                        }
                        continue;
                    }
                }
            } else {
                stream.read_buf(buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Next::Closed;
            }
        }
    }

    /// The serving thread the connection should move to, if it is not on it.
    fn elsewhere(&self) -> Option<usize> {
        let home = self.pool.as_ref()?.home(self.id);
        (threads::current()? != home).then_some(home)
    }

    /// Scores one fast-path request: writes the answer's head into `out` and returns
    /// its body, and whether the connection closes after it (the client asked, or the
    /// router is shutting down; the head says so).
    async fn score(
        &self,
        request: &Bytes,
        spans: Spans,
        keys: &mut KeyMemo,
        out: &mut Vec<u8>,
    ) -> (Bytes, bool) {
        let text = |r: &Range<usize>| std::str::from_utf8(&request[r.clone()]).unwrap_or("");
        let bytes = |r: &Range<usize>| &request[r.clone()];
        let inference = Inference {
            name: text(&spans.model),
            version: spans.version.as_ref().map(text),
            authorization: spans.authorization.as_ref().map(bytes),
            deadline: spans.deadline.as_ref().map(bytes),
        };
        let body = request.slice(spans.head_len..);
        let result =
            routes::score(&self.state, inference, std::future::ready(Ok(body)), keys).await;
        let close = spans.close || *self.stopping.borrow();
        out.clear();
        let body = match result {
            Ok(relay) => {
                wire::with_date(|date| {
                    wire::write_head(
                        out,
                        relay.answer.status,
                        relay.headers().map(|(n, v)| (n, v.as_bytes())),
                        relay.answer.body.len(),
                        date,
                        close,
                    );
                });
                relay.answer.body
            }
            Err(refusal) => {
                let (parts, body) = refusal.into_response().into_parts();
                // The router's own error bodies are in memory: this cannot wait or fail.
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                wire::with_date(|date| {
                    wire::write_head(
                        out,
                        parts.status,
                        parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_bytes())),
                        body.len(),
                        date,
                        close,
                    );
                });
                body
            }
        };
        (body, close)
    }

    /// Serves the rest of the connection with hyper and axum, starting with the bytes
    /// already read.
    async fn hand_over(self, stream: TcpStream, read: BytesMut) {
        let io = TokioIo::new(Rewind {
            read: read.freeze(),
            stream,
        });
        let connection = self.builder.serve_connection(io, Axum(self.app));
        if let Err(e) = self.watcher.watch(connection).await {
            debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

/// The positions of `head`'s parts in `buf` (which it borrows from).
fn spans(buf: &[u8], head_len: usize, head: &wire::InferHead<'_>) -> Spans {
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    Spans {
        head_len,
        content_length: head.content_length,
        model: span(head.model.as_bytes()),
        version: head.version.map(|v| span(v.as_bytes())),
        authorization: head.authorization.map(span),
        deadline: head.deadline.map(span),
        close: head.close,
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// axum's router as a hyper service.
#[derive(Clone)]
struct Axum(Router);

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Axum {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { app.oneshot(request.map(Body::new)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::infer_route;
    use proptest::prelude::*;

    #[test]
    fn matches_the_two_infer_paths_only() {
        assert_eq!(infer_route("/v2/models/risk/infer"), Some(("risk", None)));
        assert_eq!(
            infer_route("/v2/models/risk/versions/3/infer"),
            Some(("risk", Some("3")))
        );
        for other in [
            "/v2/models/risk",
            "/v2/models//infer",
            "/v2/models/risk/infer/",
            "/v2/models/a/b/infer",
            "/v2/models/risk/versions//infer",
            "/v2/models/risk/versions/3/x/infer",
            "/v2/models/ri%73k/infer",
            "/v2/models/risk/ready",
            "/v2/health/ready",
        ] {
            assert_eq!(infer_route(other), None, "{other}");
        }
    }

    proptest! {
        /// Whatever the fast path accepts, the names it returns are exactly what axum's
        /// `{model}` / `{version}` segments would capture, so both routes agree.
        #[test]
        fn agrees_with_segment_splitting(
            model in "[a-zA-Z0-9._%/-]{0,12}",
            version in proptest::option::of("[a-zA-Z0-9._%/-]{0,6}"),
        ) {
            let path = match &version {
                Some(v) => format!("/v2/models/{model}/versions/{v}/infer"),
                None => format!("/v2/models/{model}/infer"),
            };
            if let Some((m, v)) = infer_route(&path) {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                prop_assert!(!m.contains(['/', '%']) && !m.is_empty());
                match v {
                    None => prop_assert_eq!(segments, vec!["v2", "models", m, "infer"]),
                    Some(v) => {
                        prop_assert!(!v.contains(['/', '%']) && !v.is_empty());
                        prop_assert_eq!(segments, vec!["v2", "models", m, "versions", v, "infer"]);
                    }
                }
            }
        }
    }
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

    use super::*;
    use crate::budget::RetryBudget;
    use crate::metrics::RouterMetrics;
    use crate::state::Limits;
    use crate::upstream::Upstream;

    const REQUEST: &[u8] = b"POST /v2/models/risk/infer HTTP/1.1\r\nhost: r\r\n\
        authorization: Bearer nobody\r\ncontent-type: application/json\r\n\
        content-length: 2\r\n\r\n{}";

    fn state() -> Arc<AppState> {
        let (_, snapshot) = watch::channel(Arc::new(Snapshot::empty(Prefix::default())));
        Arc::new(AppState::new(
            snapshot,
            Upstream::new("token-0123456789abcdef").unwrap(),
            RetryBudget::new(200, 10, Duration::from_secs(10)),
            Limits {
                max_body: 1 << 20,
                max_rows: 16,
                default_deadline: Duration::from_secs(10),
                max_deadline: Duration::from_secs(60),
                attempt_timeout: Duration::from_secs(1),
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
