//! A fast-path request's body: read within its deadline once the request is admitted
//! ([`read_body`]), read and dropped when a tenant's request was refused without it
//! ([`discard`]), or not read at all — and then, before the connection is closed, what
//! the client still sends dropped for a moment ([`linger`]).

use bytes::{Buf as _, Bytes, BytesMut};
use shardline_service::conn::ConnLimits;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Instant;

use super::deadline::Deadline;
use crate::error::RouterError;

/// Read buffer growth step while dropping a body.
const DISCARD_CHUNK: usize = 8 << 10;
/// After answering a request whose body it did not read, the connection is closed; for
/// at most this long (and [`LINGER_BYTES`]) what the client still sends is read and
/// dropped first, so that closing does not reset the connection before the client has
/// read the answer.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// What became of a fast-path request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// Not read: the request was answered before (refused).
    Unread,
    Read,
    TimedOut,
    /// The client went away.
    Broken,
}

/// Reads a body of `len` bytes into `buf` (some may be there already) and splits it
/// off, within the body deadline; says in `outcome` what happened.
pub(super) async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    len: usize,
    limits: &ConnLimits,
    timer: &mut Deadline,
    outcome: &mut Body,
) -> Result<Bytes, RouterError> {
    let started = Instant::now();
    let mut received = 0u64;
    while buf.len() < len {
        buf.reserve(len - buf.len());
        let at = started + limits.body_allowance(received);
        match timer.run(at, stream.read_buf(buf)).await {
            Some(Ok(n)) if n > 0 => received += n as u64,
            Some(_) => {
                *outcome = Body::Broken;
                return Err(RouterError::BadRequest(
                    "the client closed the connection mid-body".into(),
                ));
            }
            None => {
                *outcome = Body::TimedOut;
                return Err(RouterError::BodyTimeout);
            }
        }
    }
    *outcome = Body::Read;
    Ok(buf.split_to(len).freeze())
}

/// Reads and drops a body of `len` bytes (some may be in `buf` already) within the body
/// deadline, holding no more than a read's worth of it; whether it all came.
pub(super) async fn discard<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    len: usize,
    limits: &ConnLimits,
    timer: &mut Deadline,
) -> bool {
    let started = Instant::now();
    let mut left = len;
    let mut received = 0u64;
    loop {
        let n = buf.len().min(left);
        buf.advance(n);
        left -= n;
        if left == 0 {
            return true;
        }
        buf.reserve(left.min(DISCARD_CHUNK));
        let at = started + limits.body_allowance(received);
        match timer.run(at, stream.read_buf(buf)).await {
            Some(Ok(n)) if n > 0 => received += n as u64,
            _ => return false,
        }
    }
}

/// Reads and drops what the client still sends, for at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`] (or until it closes), before the connection is closed.
pub(super) async fn linger<S: AsyncRead + Unpin>(stream: &mut S, timer: &mut Deadline) {
    let at = Instant::now() + LINGER_TIME;
    let mut scratch = [0u8; 8 << 10];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match timer.run(at, stream.read(&mut scratch)).await {
            Some(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}
