//! [`WorkerClient`], the production [`Upstream`]: per serving thread and worker, a pool
//! of idle keep-alive connections; per attempt, the request head written in one buffer
//! (with the body when small), a stale pooled connection retried once on a fresh one,
//! and the whole exchange bounded by the attempt's timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

use http::HeaderValue;

use super::exchange::{COALESCE, Conn, Exchange, connect, exchange_on};
use super::{
    Answer, Attempt, Failure, Outcome, PUBLIC_NAME_HEADER, REVISION_HEADER, TOKEN_HEADER, Upstream,
};
use crate::codec::{INFERENCE_HEADER, push_decimal};

/// Idle connections kept per worker.
const MAX_IDLE_PER_WORKER: usize = 256;

/// The pooled client to workers.
#[derive(Debug)]
pub struct WorkerClient {
    token: String,
    /// Idle connections by serving thread, then worker address. A connection belongs to
    /// the runtime (reactor) of the thread that opened it, so each of the router's
    /// single-threaded serving runtimes reuses only its own.
    idle: Mutex<HashMap<ThreadId, HashMap<String, Vec<Conn>>>>,
    /// Idle connections in `idle`, all threads and workers together, and their limit:
    /// with at most one connection in use per client connection, the router never holds
    /// more than twice `--max-connections` descriptors to workers.
    idle_count: AtomicUsize,
    idle_limit: usize,
}

impl Upstream for WorkerClient {
    async fn send(&self, attempt: Attempt<'_>) -> Outcome {
        if HeaderValue::from_str(attempt.public_name).is_err() {
            return Outcome::Failed(Failure::Broken("model name is not a header value".into()));
        }
        match tokio::time::timeout(attempt.timeout, self.exchange(&attempt)).await {
            Ok(Ok(answer)) => Outcome::Answered(answer),
            Ok(Err(failure)) => Outcome::Failed(failure),
            Err(_) => Outcome::Failed(Failure::Timeout),
        }
    }
}

impl WorkerClient {
    /// A client sending `token` to workers. Fails if the token cannot be a header value.
    pub fn new(token: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        HeaderValue::from_str(token)?;
        Ok(Self {
            token: token.to_owned(),
            idle: Mutex::default(),
            idle_count: AtomicUsize::new(0),
            idle_limit: usize::MAX,
        })
    }

    /// Keeps at most `limit` idle connections in all (beyond it, a connection is closed
    /// after its answer).
    pub fn with_idle_limit(mut self, limit: usize) -> Self {
        self.idle_limit = limit;
        self
    }

    /// Idle connections kept now.
    pub fn idle(&self) -> usize {
        self.idle_count.load(Ordering::Relaxed)
    }

    async fn exchange(&self, a: &Attempt<'_>) -> Result<Answer, Failure> {
        let request = self.head(a);
        // A pooled connection may have been closed by the worker while idle: if it fails
        // before any byte of an answer arrives, the request is sent once more on a fresh
        // connection (inference is idempotent).
        if let Some(mut conn) = self.checkout(a.address) {
            match exchange_on(&mut conn, &request, &a.body).await {
                Ok((answer, keep)) => {
                    if keep {
                        self.checkin(a.address, conn);
                    }
                    return Ok(answer);
                }
                Err(Exchange::Stale) => {}
                Err(Exchange::Failed(f)) => return Err(f),
            }
        }
        let mut conn = connect(a.address).await?;
        match exchange_on(&mut conn, &request, &a.body).await {
            Ok((answer, keep)) => {
                if keep {
                    self.checkin(a.address, conn);
                }
                Ok(answer)
            }
            Err(Exchange::Stale) => Err(Failure::Broken(
                "worker closed the connection without answering".into(),
            )),
            Err(Exchange::Failed(f)) => Err(f),
        }
    }

    /// Request head, with the body appended when it is small.
    fn head(&self, a: &Attempt<'_>) -> Vec<u8> {
        let small = a.body.len() <= COALESCE;
        let mut buf = Vec::with_capacity(320 + if small { a.body.len() } else { 0 });
        for part in [
            "POST ",
            a.path,
            " HTTP/1.1\r\nhost: ",
            a.address,
            "\r\ncontent-type: application/json\r\n",
            TOKEN_HEADER,
            ": ",
            &self.token,
            "\r\n",
            PUBLIC_NAME_HEADER,
            ": ",
            a.public_name,
            "\r\n",
            REVISION_HEADER,
            ": ",
        ] {
            buf.extend_from_slice(part.as_bytes());
        }
        // Revisions are positive; a negative one would be a bug upstream of here.
        push_decimal(&mut buf, a.revision.unsigned_abs());
        buf.extend_from_slice(b"\r\ncontent-length: ");
        push_decimal(&mut buf, a.body.len() as u64);
        if let Some(n) = a.header_length {
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(INFERENCE_HEADER.as_bytes());
            buf.extend_from_slice(b": ");
            push_decimal(&mut buf, n as u64);
        }
        buf.extend_from_slice(b"\r\n\r\n");
        if small {
            buf.extend_from_slice(&a.body);
        }
        buf
    }

    fn checkout(&self, address: &str) -> Option<Conn> {
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&this_thread())?
            .get_mut(address)?
            .pop()?;
        self.idle_count.fetch_sub(1, Ordering::Relaxed);
        Some(conn)
    }

    fn checkin(&self, address: &str, conn: Conn) {
        if self.idle_count.load(Ordering::Relaxed) >= self.idle_limit {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = idle.entry(this_thread()).or_default();
        match idle.get_mut(address) {
            Some(list) if list.len() < MAX_IDLE_PER_WORKER => list.push(conn),
            Some(_) => return,
            None => {
                idle.insert(address.to_owned(), vec![conn]);
            }
        }
        self.idle_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes idle connections to workers that are gone (keeps the pool bounded).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        let mut dropped = 0;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
            .for_each(|by_address| {
                by_address.retain(|address, conns| {
                    let keep = live(address);
                    if !keep {
                        dropped += conns.len();
                    }
                    keep
                })
            });
        self.idle_count.fetch_sub(dropped, Ordering::Relaxed);
    }
}

thread_local! {
    static THREAD: ThreadId = std::thread::current().id();
}

/// The calling thread's id (cached: `thread::current()` clones a handle each call).
fn this_thread() -> ThreadId {
    THREAD.with(|id| *id)
}
