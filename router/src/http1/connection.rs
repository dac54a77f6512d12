//! One client connection on the fast path: read a request head, serve a plain inference
//! `POST` right here (authenticated and admitted by [`crate::infer::handle`] before its
//! body is read; the body a slice of the read buffer; the answer head written by
//! [`crate::codec::write_head`]), move to another serving thread between requests when
//! the pool says so, and close between requests at shutdown. Every wait on the client
//! has a deadline (`deadline`): the head (`--header-timeout`), the body (`--body-timeout`
//! and `--body-min-rate`), the next request (`--idle-timeout`), a write it does not read
//! (`--write-timeout`). Anything else goes to hyper (`hand_over`).

use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse as _;
use bytes::{Buf as _, Bytes, BytesMut};
use hyper_util::server::graceful::Watcher;
use shardline_service::conn::{ConnGate, ConnLimits, ConnSlot, HyperConn, Reason};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::body::{Body, discard, linger, read_body};
use super::deadline::Deadline;
use super::hand_over::{self, Handed};
use super::transport::Transport;
use crate::codec;
use crate::error::RouterError;
use crate::infer::{self, InferRequest, KeyMemo};
use crate::state::AppState;
use crate::threads::{self, ServingPool};

/// Headers the fast path reads (on the stack); a request with more is hyper's, which
/// applies `--max-headers`.
const MAX_HEADERS: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 << 10;
/// Answer bodies up to this size are copied behind their head and sent in one write.
const COALESCE: usize = 16 << 10;
/// One accepted connection and what serving it needs.
pub(super) struct Connection {
    pub(super) state: Arc<AppState>,
    pub(super) app: Router,
    pub(super) hyper: HyperConn,
    pub(super) limits: ConnLimits,
    /// Its place under `--max-connections`, given back when the connection ends.
    pub(super) slot: ConnSlot,
    /// Held while the connection is open: graceful shutdown waits for it.
    pub(super) watcher: Watcher,
    /// Becomes `true` when the router stops accepting.
    pub(super) stopping: watch::Receiver<bool>,
    /// Becomes `true` when the shutdown grace period is over.
    pub(super) aborted: watch::Receiver<bool>,
    pub(super) peer: SocketAddr,
    /// Accept order: which of the pool's active threads the connection belongs on.
    pub(super) id: usize,
    /// When it was accepted, until its first request head is read (the header timeout
    /// counts from there).
    pub(super) accepted: Option<Instant>,
    pub(super) pool: Option<Arc<ServingPool>>,
    /// Shakes hands first when the listener is TLS (taken at the first start: a moved
    /// connection is plain TCP, a TLS one never moves).
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Where a fast-path request's parts lie in its head.
struct Spans {
    head_len: usize,
    content_length: usize,
    model: Range<usize>,
    version: Option<Range<usize>>,
    authorization: Option<Range<usize>>,
    deadline: Option<Range<usize>>,
    header_length: Option<Range<usize>>,
    route_key: Option<Range<usize>>,
    close: bool,
}

/// What the next request on a connection is.
enum Next {
    /// The connection ended (closed, broken, or idle at shutdown).
    Closed,
    /// The client took too long.
    TimedOut(Reason),
    /// A request hyper serves (see [`codec::classify`]), begun at this instant.
    Other(Instant),
    Infer(Spans),
    /// Between requests, on the wrong serving thread: move to this one.
    Move(usize),
}

impl Connection {
    /// The gate counting this connection.
    pub(super) fn gate(&self) -> Arc<ConnGate> {
        self.slot.gate_arc()
    }

    /// Serves the connection until it ends, or returns it, its socket released by this
    /// thread's reactor, when it is to move to the serving thread returned with it.
    pub(super) async fn run<S: Transport>(
        mut self,
        mut stream: S,
    ) -> Option<(Self, std::net::TcpStream, usize)> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(1024);
        let mut keys = KeyMemo::default();
        let mut timer = Deadline::new();
        let mut idle_since = Instant::now();
        loop {
            let spans = match self
                .next_request(&mut stream, &mut buf, &mut timer, idle_since)
                .await
            {
                Next::Closed => return None,
                Next::TimedOut(reason) => {
                    self.slot.gate().closed(reason);
                    return None;
                }
                Next::Other(since) => {
                    hand_over::to_hyper(Handed {
                        hyper: self.hyper,
                        app: self.app,
                        slot: self.slot,
                        watcher: self.watcher,
                        stream,
                        read: buf,
                        since,
                    })
                    .await;
                    return None;
                }
                Next::Move(target) => {
                    return match stream.into_movable() {
                        Some(Ok(stream)) => Some((self, stream, target)),
                        Some(Err(e)) => {
                            debug!(peer = %self.peer, error = %e, "cannot move the connection");
                            None
                        }
                        None => None,
                    };
                }
                Next::Infer(spans) => spans,
            };
            let head = buf.split_to(spans.head_len).freeze();
            let content_length = spans.content_length;
            let mut body = Body::Unread;
            let result = {
                let read = read_body(
                    &mut stream,
                    &mut buf,
                    content_length,
                    &self.limits,
                    &mut timer,
                    &mut body,
                );
                self.handle(&head, &spans, read, &mut keys).await
            };
            let unread_body = match body {
                Body::Read => false,
                // Refused before its body was needed: if the body is here already, it is
                // skipped and the connection kept.
                Body::Unread if buf.len() >= content_length => {
                    buf.advance(content_length);
                    false
                }
                // An unauthenticated request costs no more than its head: the rest of
                // its body is not waited for, and the connection is closed.
                Body::Unread if matches!(result, Err(RouterError::Unauthorized)) => true,
                // A tenant's refused request (404, 429, …): its body is read and dropped
                // so that the connection stays usable.
                Body::Unread => {
                    let limits = self.limits;
                    !discard(&mut stream, &mut buf, content_length, &limits, &mut timer).await
                }
                Body::TimedOut => {
                    self.slot.gate().closed(Reason::BodyTimeout);
                    true
                }
                Body::Broken => return None,
            };
            let linger_after = unread_body && body == Body::Unread;
            if linger_after {
                self.slot.gate().closed(Reason::BodyUnread);
            }
            let close = spans.close || unread_body || *self.stopping.borrow();
            let answer = self.write_answer(result, close, &mut out).await;
            let at = Instant::now() + self.limits.write_timeout;
            let written = timer.run(at, async {
                if answer.len() <= COALESCE {
                    out.extend_from_slice(&answer);
                    stream.write_all(&out).await?;
                } else {
                    stream.write_all(&out).await?;
                    stream.write_all(&answer).await?;
                }
                // TLS may hold the end of the answer in its record buffer (a no-op on TCP).
                stream.flush().await?;
                Ok::<_, std::io::Error>(())
            });
            match written.await {
                Some(Ok(())) => {}
                Some(Err(_)) => return None,
                None => {
                    self.slot.gate().closed(Reason::WriteTimeout);
                    return None;
                }
            }
            if close {
                let _ = stream.shutdown().await;
                if linger_after {
                    linger(&mut stream, &mut timer).await;
                }
                return None;
            }
            idle_since = Instant::now();
        }
    }

    /// Reads until `buf` holds a complete request head and says what it is. Waiting
    /// for a request with nothing read is bounded by the idle timeout from
    /// `idle_since` (by the header timeout from the accept, for a connection's first
    /// request); once a request's first bytes are here, its head by the header timeout.
    async fn next_request<S: Transport>(
        &mut self,
        stream: &mut S,
        buf: &mut BytesMut,
        timer: &mut Deadline,
        idle_since: Instant,
    ) -> Next {
        let limits = self.limits;
        let mut began = match self.accepted {
            Some(accepted) => Some(accepted),
            None if buf.is_empty() => None,
            None => Some(Instant::now()),
        };
        loop {
            if !buf.is_empty() {
                let began = *began.get_or_insert_with(Instant::now);
                // Uninitialised: filling 64 empty headers per request costs more than
                // parsing a typical head.
                let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(buf, &mut headers) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        self.accepted = None;
                        if req.headers.len() > limits.max_headers {
                            return Next::Other(began);
                        }
                        return match codec::classify(&req, self.state.limits.max_body) {
                            Some(head) => Next::Infer(spans(buf, head_len, &head)),
                            None => Next::Other(began),
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < limits.max_header_bytes => {}
                    // Malformed or oversized: hyper gives the answer it gives.
                    _ => return Next::Other(began),
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read = match began {
                Some(began) => {
                    let at = began + limits.header_timeout;
                    match timer.run(at, stream.read_buf(buf)).await {
                        Some(read) => read,
                        None => return Next::TimedOut(Reason::HeaderTimeout),
                    }
                }
                None => {
                    // Between requests is the only point where shutdown closes a connection.
                    if *self.stopping.borrow() {
                        return Next::Closed;
                    }
                    if let Some(target) = S::MOVABLE.then(|| self.elsewhere()).flatten() {
                        return Next::Move(target);
                    }
                    let at = idle_since + limits.idle_timeout;
                    let waited = timer.run(at, async {
                        tokio::select! {
                            read = stream.read_buf(buf) => Some(read),
                            changed = self.stopping.changed() => changed.ok().map(|()| Ok(0)),
                        }
                    });
                    match waited.await {
                        // Read, or shutdown began (`Ok(0)`: closed between requests).
                        Some(Some(read)) => read,
                        Some(None) => return Next::Closed,
                        None => return Next::TimedOut(Reason::IdleTimeout),
                    }
                }
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

    /// Runs one fast-path request through the inference service; `body` reads its body
    /// when the service gets that far.
    async fn handle(
        &self,
        head: &Bytes,
        spans: &Spans,
        body: impl Future<Output = Result<Bytes, RouterError>>,
        keys: &mut KeyMemo,
    ) -> Result<infer::Relay, RouterError> {
        let text = |r: &Range<usize>| std::str::from_utf8(&head[r.clone()]).unwrap_or("");
        let bytes = |r: &Range<usize>| &head[r.clone()];
        let parts = InferRequest {
            name: text(&spans.model),
            version: spans.version.as_ref().map(text),
            chosen: None,
            authorization: spans.authorization.as_ref().map(bytes),
            deadline: spans.deadline.as_ref().map(bytes),
            header_length: spans.header_length.as_ref().map(bytes),
            route_key: spans.route_key.as_ref().map(bytes),
            content_length: Some(spans.content_length as u64),
        };
        infer::handle(&self.state, parts, body, keys).await
    }

    /// Writes an answer's head into `out` (saying `connection: close` when `close`) and
    /// returns its body.
    async fn write_answer(
        &self,
        result: Result<infer::Relay, RouterError>,
        close: bool,
        out: &mut Vec<u8>,
    ) -> Bytes {
        out.clear();
        match result {
            Ok(relay) => {
                codec::with_date(|date| {
                    codec::write_head(
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
                codec::with_date(|date| {
                    codec::write_head(
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
        }
    }
}

/// The positions of `head`'s parts in `buf` (which it borrows from).
fn spans(buf: &[u8], head_len: usize, head: &codec::InferHead<'_>) -> Spans {
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
        header_length: head.header_length.map(span),
        route_key: head.route_key.map(span),
        close: head.close,
    }
}
