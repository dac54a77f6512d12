//! Calls to workers: the [`Upstream`] seam (send one [`Attempt`], get an [`Outcome`])
//! and its production implementation [`WorkerClient`], a lean HTTP/1.1 keep-alive client
//! with a per-worker pool of idle connections (`client`), forwarding the client's
//! validated body bytes as they are; one request/answer exchange on a connection is
//! `exchange`'s.
//!
//! Why not a general client: on two cores the router's CPU comes out of the workers'
//! share, and hyper-util's pooled client spent much of it in its pool, per-connection
//! tasks and the channel hand-offs between them and the handler (see docs/benchmarks.md,
//! section Router hop). Here the handler's own task writes one buffer (head and body) on
//! a pooled connection and reads the answer with `httparse`: no extra task, no channel,
//! no wake-ups. Workers are ours and answer with `Content-Length`; a chunked answer is
//! refused as broken rather than guessed at.
//!
//! An attempt either gets an answer from the worker (any status, body read whole —
//! responses are small) or fails to (connect error, reset, timeout). Which outcomes are
//! worth another member of the shard is [`Outcome::retryable`]'s call.

mod client;
mod exchange;

pub use self::client::WorkerClient;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

pub use shardline_shared::wire::{PUBLIC_NAME_HEADER, REVISION_HEADER, TOKEN_HEADER};

/// What one attempt produced.
#[derive(Debug)]
pub enum Outcome {
    /// The worker answered.
    Answered(Answer),
    /// No answer: the attempt failed before or while reading the response.
    Failed(Failure),
}

impl Outcome {
    /// Connection failures, timeouts and 502/503/504 may succeed on another member;
    /// every other answer (success or 4xx) is final, and so is the router running out
    /// of descriptors (no member would fare better).
    pub fn retryable(&self) -> bool {
        match self {
            Outcome::Failed(Failure::Exhausted(_)) => false,
            Outcome::Failed(_) => true,
            Outcome::Answered(a) => matches!(
                a.status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
        }
    }

    /// Label for `shardline_router_upstream_requests_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered(a) if a.status.is_success() => "ok",
            Outcome::Answered(a) if a.status.is_client_error() => "client_error",
            Outcome::Answered(_) => "server_error",
            Outcome::Failed(Failure::Connect(_)) => "connect_error",
            Outcome::Failed(Failure::Timeout) => "timeout",
            Outcome::Failed(Failure::Broken(_)) => "broken",
            Outcome::Failed(Failure::Exhausted(_)) => "router_exhausted",
        }
    }
}

/// A worker's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    /// The answer's `Inference-Header-Content-Length` (binary tensor data follows its
    /// JSON), relayed to the client as it came.
    pub header_length: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (worker down, refused).
    Connect(String),
    /// The router itself could not open a connection (out of descriptors, memory or
    /// local ports): not the worker's fault, so it is not held against it.
    Exhausted(String),
    /// The attempt's time ran out.
    Timeout,
    /// The connection broke while the request or response was in flight, or the
    /// answer was not HTTP we accept.
    Broken(String),
}

/// One inference to send.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// `host:port` of the worker.
    pub address: &'a str,
    /// Path and query on the worker, e.g. `/v2/models/acme.risk/versions/3/infer`.
    pub path: &'a str,
    pub body: Bytes,
    /// The client's `Inference-Header-Content-Length`, forwarded with its body.
    pub header_length: Option<usize>,
    pub public_name: &'a str,
    pub revision: i64,
    pub timeout: Duration,
}

/// What the inference path sends attempts through: [`WorkerClient`] in production, a
/// scripted double in the inference service's tests. A generic parameter (not a boxed
/// future): the production path stays monomorphic and allocation-free.
pub trait Upstream: Send + Sync + 'static {
    /// Sends one attempt and reads the whole answer within `attempt.timeout`.
    fn send(&self, attempt: Attempt<'_>) -> impl Future<Output = Outcome> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A one-connection server that answers each request with `answers` in turn, then
    /// closes.
    async fn server(answers: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            for answer in answers {
                let mut got = Vec::new();
                loop {
                    let n = conn.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            assert!(head.contains("x-shardline-token: secret-token-0123"));
                            break;
                        }
                    }
                }
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    fn attempt(address: &str) -> Attempt<'_> {
        Attempt {
            address,
            path: "/v2/models/a.b/versions/1/infer",
            body: Bytes::from_static(b"{\"inputs\":[]}"),
            header_length: None,
            public_name: "b",
            revision: 7,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn answers_are_read_and_connections_reused() {
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 5\r\n\r\nnope!",
        ])
        .await;
        let up = WorkerClient::new("secret-token-0123").unwrap();
        let Outcome::Answered(a) = up.send(attempt(&addr)).await else {
            panic!("no answer")
        };
        assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"{}"[..]));
        // The second request goes over the same (only) connection the server accepts.
        let second = up.send(attempt(&addr)).await;
        assert!(second.retryable());
        let Outcome::Answered(a) = second else {
            panic!("no answer")
        };
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.retry_after.unwrap(), "1");
        assert_eq!(&a.body[..], b"nope!");
    }

    #[tokio::test]
    async fn refused_truncated_and_chunked_answers_are_failures() {
        let up = WorkerClient::new("secret-token-0123").unwrap();
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert!(matches!(
            up.send(attempt(&closed)).await,
            Outcome::Failed(Failure::Connect(_))
        ));
        let addr = server(vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]).await;
        assert!(matches!(
            up.send(attempt(&addr)).await,
            Outcome::Failed(Failure::Broken(_))
        ));
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ])
        .await;
        assert!(matches!(
            up.send(attempt(&addr)).await,
            Outcome::Failed(Failure::Broken(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_worker_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let _keep = tokio::spawn(async move {
            let (_conn, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let up = WorkerClient::new("secret-token-0123").unwrap();
        let mut a = attempt(&addr);
        a.timeout = Duration::from_millis(200);
        assert!(matches!(
            up.send(a).await,
            Outcome::Failed(Failure::Timeout)
        ));
    }
}
