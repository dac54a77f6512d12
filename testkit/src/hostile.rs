//! Hostile clients, for tests and benchmarks that attack a real server on loopback:
//! many connections that send part of a head (or one request) and then hold on
//! ([`hold`]), a client that sends requests and never reads the answers
//! ([`never_read`]), a body trickled slower than any server should wait for
//! ([`trickle`]), one raw exchange read to its end ([`exchange`]), and the request
//! smuggling probes ([`SMUGGLING_PROBES`]), and an infer body whose `parameters` is a
//! million tiny objects ([`parameters_bomb`]). Plus what a test watches on the server's
//! side: its open descriptors ([`open_descriptors`]) and memory ([`Memory`]).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The start of a request head that never ends.
pub const PARTIAL_HEAD: &[u8] = b"POST /v2/models/risk/infer HTTP/1.1\r\nHost: x\r\n";

/// Connections held open by a hostile client.
#[derive(Debug, Default)]
pub struct Held {
    conns: Vec<TcpStream>,
    /// Connections that could not even be made.
    pub refused: usize,
}

/// Opens `n` connections to `addr` (up to 256 at a time), each sending `first` (nothing,
/// part of a head, or a whole request), and keeps them.
pub async fn hold(addr: &str, n: usize, first: &[u8]) -> Held {
    let mut held = Held::default();
    let mut left = n;
    while left > 0 {
        let batch = left.min(256);
        left -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (addr, first) = (addr.to_owned(), first.to_vec());
                tokio::spawn(async move {
                    let mut conn = TcpStream::connect(&addr).await.ok()?;
                    if !first.is_empty() {
                        // A server at its limit may close before this is written.
                        let _ = conn.write_all(&first).await;
                    }
                    Some(conn)
                })
            })
            .collect();
        for task in tasks {
            match task.await.ok().flatten() {
                Some(conn) => held.conns.push(conn),
                None => held.refused += 1,
            }
        }
    }
    held
}

impl Held {
    /// Connections held (made, whatever became of them since).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// How many the server has closed by now (end of stream or reset, after whatever
    /// answer it sent), without waiting.
    pub fn closed(&self) -> usize {
        let mut buf = [0u8; 1024];
        self.conns
            .iter()
            .filter(|c| {
                loop {
                    match c.try_read(&mut buf) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                }
            })
            .count()
    }

    /// Waits up to `timeout` for the server to close every connection; how many it closed.
    pub async fn wait_closed(&self, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            let closed = self.closed();
            if closed == self.len() || Instant::now() >= end {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends `request` over and over on one connection with a small receive buffer, never
/// reading an answer, until the connection breaks or `limit` passes; returns how long
/// it stayed usable (`None`: it never broke).
pub async fn never_read(addr: &str, request: &[u8], limit: Duration) -> Option<Duration> {
    let socket = TcpSocket::new_v4().ok()?;
    let _ = socket.set_recv_buffer_size(4096);
    let mut conn = socket.connect(addr.parse().ok()?).await.ok()?;
    let burst: Vec<u8> = request.repeat(64);
    let started = Instant::now();
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, conn.write_all(&burst)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

/// Sends `head` and then `body` a few bytes at a time, one piece every `every`, until
/// the server answers or closes; returns the answer (possibly empty) and when it came.
pub async fn trickle(addr: &str, head: &[u8], body: &[u8], every: Duration) -> (Vec<u8>, Duration) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let _ = conn.write_all(head).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for piece in body.chunks(8) {
        if let Ok(read) = tokio::time::timeout(every, conn.read(&mut buf)).await {
            match read {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => return (answer, started.elapsed()),
            }
            // Read the rest of the answer (the server closes after it).
            let _ =
                tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
            return (answer, started.elapsed());
        }
        if conn.write_all(piece).await.is_err() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), conn.read_to_end(&mut answer)).await;
            return (answer, started.elapsed());
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    (answer, started.elapsed())
}

/// What came back for raw bytes sent on one connection.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Every byte the server sent.
    pub bytes: Vec<u8>,
    /// The server closed the connection (rather than leaving it open `quiet`).
    pub closed: bool,
}

impl Exchange {
    /// The status of every answer, in order (answer heads found in the bytes).
    pub fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.match_indices("HTTP/1.")
            .filter_map(|(i, _)| text[i..].split_whitespace().nth(1)?.parse().ok())
            .collect()
    }
}

/// One HTTP/1.1 answer as read off the wire by a byte-level client.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON part: the whole body, or its first `Inference-Header-Content-Length`
    /// bytes (the binary tensor data extension). Panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        let n = self
            .header("inference-header-content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.body.len())
            .min(self.body.len());
        serde_json::from_slice(&self.body[..n])
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `bytes` on a new connection and reads until the server closes it or sends
/// nothing for `quiet`.
pub async fn exchange(addr: &str, bytes: &[u8], quiet: Duration) -> Exchange {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let _ = conn.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            Ok(_) => {
                return Exchange {
                    bytes: out,
                    closed: true,
                };
            }
            Err(_) => {
                return Exchange {
                    bytes: out,
                    closed: false,
                };
            }
        }
    }
}

/// Request smuggling probes, by name: each is one request whose framing a front end
/// and a back end might read differently, carrying a second complete request
/// (`{smuggled}`) where only a confused reader finds one. Read correctly, each is one
/// request (one answer, or a 400 for the ambiguous framing) and never two; fill in the
/// holes with [`probe`].
pub const SMUGGLING_PROBES: &[(&str, &str)] = &[
    // Chunked says the body ends at `0`; a reader of the length sees 4 bytes.
    (
        "content-length and transfer-encoding",
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
    ),
    // The first length covers the smuggled request, the second none of it.
    (
        "two different content-lengths",
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {smuggled_len}\r\ncontent-length: 0\r\n\r\n{smuggled}",
    ),
    (
        "content-length: 5, 5",
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {smuggled_len}, {smuggled_len}\r\n\r\n{smuggled}",
    ),
    // A reader that does not end lines at a bare LF sees no length (an empty body).
    (
        "bare LF line endings",
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}x-a: b\ncontent-length: {smuggled_len}\r\n\r\n{smuggled}",
    ),
    // A reader that unfolds continuation lines sees the length as part of `x-fold`.
    (
        "obs-fold header continuation",
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\nx-fold: a\r\n content-length: {smuggled_len}\r\n\r\n{smuggled}",
    ),
];

/// The bytes of smuggling probe `template` for path `path` with bearer `key`; the
/// smuggled second request is an inference of `body`.
pub fn probe(template: &str, path: &str, key: &str, body: &str) -> Vec<u8> {
    let auth = format!("authorization: Bearer {key}\r\n");
    let smuggled = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    template
        .replace("{path}", path)
        .replace("{auth}", &auth)
        .replace("{smuggled_len}", &smuggled.len().to_string())
        .replace("{smuggled}", &smuggled)
        .into_bytes()
}

/// Descriptors process `pid` has open now (Linux: `/proc/<pid>/fd`).
pub fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A JSON infer body of exactly `len` bytes whose `parameters` holds as many `{"":0}`
/// objects as fit — parsed into maps, ~85 bytes of heap per body byte — followed by
/// `rest`: the body's other members and its closing brace (`"inputs":[…]}`).
pub fn parameters_bomb(len: usize, rest: &str) -> Vec<u8> {
    const OBJECT: &[u8] = br#"{"":0},"#;
    let (head, tail) = (br#"{"parameters":{"bomb":["#, br#"{"":0}]},"#);
    let fixed = head.len() + tail.len() + rest.len();
    assert!(len >= fixed, "a bomb needs at least {fixed} bytes");
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(head);
    let objects = (len - fixed) / OBJECT.len();
    for _ in 0..objects {
        body.extend_from_slice(OBJECT);
    }
    body.extend_from_slice(tail);
    body.resize(len - rest.len(), b' ');
    body.extend_from_slice(rest.as_bytes());
    body
}

/// A process's memory as Linux reports it in `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// The largest resident set size since the process started (`VmHWM`).
    pub peak: u64,
}

impl Memory {
    /// Process `pid`'s memory now (`None` once it has exited, or off Linux).
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(name))?;
            let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        };
        Some(Self {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_carry_a_second_request() {
        for (name, template) in SMUGGLING_PROBES {
            let bytes = probe(template, "/v2/models/m/infer", "k", "{}");
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(text.matches("POST /v2/models/m/infer").count(), 2, "{name}");
            for hole in [
                "{path}",
                "{auth}",
                "{auth_lf}",
                "{len}",
                "{body}",
                "{smuggled}",
            ] {
                assert!(!text.contains(hole), "{name}: {text}");
            }
        }
    }

    #[test]
    fn statuses_are_read_in_order() {
        let e = Exchange {
            bytes: b"HTTP/1.1 401 Unauthorized\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            closed: true,
        };
        assert_eq!(e.statuses(), vec![401, 400]);
    }

    #[test]
    fn a_bomb_has_the_length_asked_and_is_json() {
        let rest = r#""inputs":[]}"#;
        // 23 bytes before the objects, 9 for the last one and the closing brackets.
        let fixed = 23 + 9 + rest.len();
        for len in [fixed, fixed + 1, fixed + 7, 1000, 1 << 16] {
            let body = parameters_bomb(len, rest);
            assert_eq!(body.len(), len);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let objects = v["parameters"]["bomb"].as_array().unwrap().len();
            assert_eq!(objects, 1 + (len - fixed) / 7);
            assert_eq!(v["inputs"], serde_json::json!([]));
        }
    }

    #[test]
    fn this_process_has_a_resident_set() {
        if cfg!(target_os = "linux") {
            let m = Memory::of(std::process::id()).unwrap();
            assert!(m.rss > 0 && m.peak >= m.rss, "{m:?}");
        }
    }

    #[test]
    fn this_process_has_descriptors() {
        if cfg!(target_os = "linux") {
            assert!(open_descriptors(std::process::id()).unwrap() > 0);
        }
    }
}
