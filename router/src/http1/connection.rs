//! One client connection on the fast path: read a request head, serve a plain inference
//! `POST` right here (its body a slice of the read buffer, handed to
//! [`crate::infer::handle`], its answer head written by [`crate::codec::write_head`]),
//! move to another serving thread between requests when the pool says so, and close
//! between requests at shutdown. Anything else goes to hyper (`hand_over`).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse as _;
use bytes::{Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use super::hand_over;
use crate::codec;
use crate::infer::{self, InferRequest, KeyMemo};
use crate::state::AppState;
use crate::threads::{self, ServingPool};

/// Largest request head the fast path waits for before leaving the connection to hyper.
const MAX_HEAD: usize = 64 << 10;
/// Headers the fast path reads; a request with more is hyper's.
const MAX_HEADERS: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 << 10;
/// Answer bodies up to this size are copied behind their head and sent in one write.
const COALESCE: usize = 16 << 10;

/// One accepted connection and what serving it needs.
pub(super) struct Connection {
    pub(super) state: Arc<AppState>,
    pub(super) app: Router,
    pub(super) builder: http1::Builder,
    /// Held while the connection is open: graceful shutdown waits for it.
    pub(super) watcher: Watcher,
    /// Becomes `true` when the router stops accepting.
    pub(super) stopping: watch::Receiver<bool>,
    pub(super) peer: SocketAddr,
    /// Accept order: which of the pool's active threads the connection belongs on.
    pub(super) id: usize,
    pub(super) pool: Option<Arc<ServingPool>>,
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
    /// A request hyper serves (see [`codec::classify`]).
    Other,
    Infer(Spans),
    /// Between requests, on the wrong serving thread: move to this one.
    Move(usize),
}

impl Connection {
    /// Serves the connection until it ends, or returns it, its socket released by this
    /// thread's reactor, when it is to move to the serving thread returned with it.
    pub(super) async fn run(
        mut self,
        mut stream: TcpStream,
    ) -> Option<(Self, std::net::TcpStream, usize)> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(1024);
        let mut keys = KeyMemo::default();
        loop {
            let spans = match self.next_request(&mut stream, &mut buf).await {
                Next::Closed => return None,
                Next::Other => {
                    hand_over::to_hyper(
                        self.app,
                        &self.builder,
                        self.watcher,
                        self.peer,
                        stream,
                        buf,
                    )
                    .await;
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
            let (body, close) = self.answer_fast(&request, spans, &mut keys, &mut out).await;
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
                        return match codec::classify(&req, self.state.limits.max_body) {
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

    /// Answers one fast-path request through the inference service: writes the answer's
    /// head into `out` and returns its body, and whether the connection closes after it (the client asked, or the
    /// router is shutting down; the head says so).
    async fn answer_fast(
        &self,
        request: &Bytes,
        spans: Spans,
        keys: &mut KeyMemo,
        out: &mut Vec<u8>,
    ) -> (Bytes, bool) {
        let text = |r: &Range<usize>| std::str::from_utf8(&request[r.clone()]).unwrap_or("");
        let bytes = |r: &Range<usize>| &request[r.clone()];
        let request_parts = InferRequest {
            name: text(&spans.model),
            version: spans.version.as_ref().map(text),
            authorization: spans.authorization.as_ref().map(bytes),
            deadline: spans.deadline.as_ref().map(bytes),
        };
        let body = request.slice(spans.head_len..);
        let result = infer::handle(
            &self.state,
            request_parts,
            std::future::ready(Ok(body)),
            keys,
        )
        .await;
        let close = spans.close || *self.stopping.borrow();
        out.clear();
        let body = match result {
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
        };
        (body, close)
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
        close: head.close,
    }
}
