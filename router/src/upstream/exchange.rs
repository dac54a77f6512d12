//! One request/answer exchange on a pooled connection to a worker: writing the request
//! bytes and reading one answer — head parsed with `httparse` into what the router
//! needs of it, body read whole by its `Content-Length` — and whether the connection
//! may be reused after it.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Answer, Failure};
use shardline_shared::decode::INFERENCE_HEADER;

/// Bodies up to this size are copied behind the head and sent in one write.
pub(super) const COALESCE: usize = 16 << 10;
/// Largest answer head or body accepted from a worker.
const MAX_ANSWER: usize = 64 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 4 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to a worker with its read buffer (kept with it: once the answers read
/// into it are dropped, the buffer is reused instead of allocated per request).
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

pub(super) async fn connect(address: &str) -> Result<Conn, Failure> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| Failure::Connect(format!("connect to {address} timed out")))?
        .map_err(|e| {
            let message = format!("connect to {address}: {e}");
            if local_exhaustion(&e) {
                Failure::Exhausted(message)
            } else {
                Failure::Connect(message)
            }
        })?;
    conn.set_nodelay(true)
        .map_err(|e| Failure::Connect(e.to_string()))?;
    Ok(Conn {
        stream: conn,
        buf: BytesMut::with_capacity(READ_CHUNK),
    })
}

/// Whether a connect failed for want of something on the router's side: descriptors
/// (`EMFILE`, `ENFILE`: 24 and 23 on Linux and the BSDs), buffers (`ENOBUFS`), memory or
/// local ports.
pub(super) fn local_exhaustion(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = if cfg!(target_os = "linux") { 105 } else { 55 };
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE | ENOBUFS))
        || matches!(
            e.kind(),
            std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::AddrNotAvailable
        )
}

pub(super) enum Exchange {
    /// The connection was closed before any answer byte: safe to resend.
    Stale,
    Failed(Failure),
}

/// Writes the request and reads one answer. Returns whether the connection may be reused.
pub(super) async fn exchange_on(
    Conn { stream: conn, buf }: &mut Conn,
    head: &[u8],
    body: &Bytes,
) -> Result<(Answer, bool), Exchange> {
    let broken = |e: std::io::Error| Exchange::Failed(Failure::Broken(e.to_string()));
    let written = async {
        conn.write_all(head).await?;
        if body.len() > COALESCE {
            conn.write_all(body).await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    if written.is_err() {
        return Err(Exchange::Stale);
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    // Read until the head is complete.
    let (parsed, head_len) = loop {
        let n = conn.read_buf(buf).await.map_err(|e| {
            if buf.is_empty() {
                Exchange::Stale
            } else {
                broken(e)
            }
        })?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Exchange::Stale
            } else {
                Exchange::Failed(Failure::Broken(
                    "worker closed the connection mid-answer".into(),
                ))
            });
        }
        let mut headers = [const { MaybeUninit::uninit() }; 24];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => break (Head::of(&response)?, len),
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER => continue,
            Ok(httparse::Status::Partial) => {
                return Err(Exchange::Failed(Failure::Broken(
                    "answer head too large".into(),
                )));
            }
            Err(e) => {
                return Err(Exchange::Failed(Failure::Broken(format!(
                    "invalid answer from worker: {e}"
                ))));
            }
        }
    };
    let Some(length) = parsed.content_length else {
        return Err(Exchange::Failed(Failure::Broken(
            "worker answered without content-length".into(),
        )));
    };
    if length > MAX_ANSWER {
        return Err(Exchange::Failed(Failure::Broken("answer too large".into())));
    }
    buf.advance(head_len);
    while buf.len() < length {
        buf.reserve(length - buf.len());
        let n = conn.read_buf(buf).await.map_err(broken)?;
        if n == 0 {
            return Err(Exchange::Failed(Failure::Broken(
                "worker closed the connection mid-answer".into(),
            )));
        }
    }
    // Anything past the body would be an answer we never asked for: do not reuse.
    let keep = parsed.keep_alive && buf.len() == length;
    let body = buf.split_to(length).freeze();
    Ok((
        Answer {
            status: parsed.status,
            content_type: parsed.content_type,
            retry_after: parsed.retry_after,
            header_length: parsed.header_length,
            body,
        },
        keep,
    ))
}

/// What the router needs from an answer's head.
struct Head {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    header_length: Option<HeaderValue>,
    content_length: Option<usize>,
    keep_alive: bool,
}

impl Head {
    fn of(r: &httparse::Response<'_, '_>) -> Result<Self, Exchange> {
        let bad = |what: &str| Exchange::Failed(Failure::Broken(format!("invalid answer: {what}")));
        let status = r
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| bad("status"))?;
        let mut head = Head {
            status,
            content_type: None,
            retry_after: None,
            header_length: None,
            content_length: None,
            keep_alive: r.version == Some(1),
        };
        for h in r.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| bad("content-length"))?;
                head.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("content-type") {
                // Workers answer JSON: no copy for the usual value.
                head.content_type = if h.value == b"application/json" {
                    Some(HeaderValue::from_static("application/json"))
                } else {
                    HeaderValue::from_bytes(h.value).ok()
                };
            } else if name.eq_ignore_ascii_case("retry-after") {
                head.retry_after = HeaderValue::from_bytes(h.value).ok();
            } else if name.eq_ignore_ascii_case(INFERENCE_HEADER) {
                head.header_length = HeaderValue::from_bytes(h.value).ok();
            } else if name.eq_ignore_ascii_case("connection") {
                if h.value.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not supported"));
            }
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::local_exhaustion;
    use std::io::{Error, ErrorKind};

    #[test]
    fn only_the_routers_own_shortages_count_as_exhaustion() {
        for errno in [23, 24] {
            assert!(
                local_exhaustion(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(local_exhaustion(&Error::from(ErrorKind::AddrNotAvailable)));
        for other in [
            ErrorKind::ConnectionRefused,
            ErrorKind::TimedOut,
            ErrorKind::ConnectionReset,
        ] {
            assert!(!local_exhaustion(&Error::from(other)), "{other:?}");
        }
        // ECONNREFUSED and EHOSTUNREACH are the worker's side.
        assert!(!local_exhaustion(&Error::from_raw_os_error(111)));
        assert!(!local_exhaustion(&Error::from_raw_os_error(113)));
    }
}
