//! Calls to workers: one pooled HTTP/1.1 keep-alive client (hyper) shared by every
//! request, forwarding the client's validated body bytes as they are.
//!
//! An attempt either gets an answer from the worker (any status, body read whole —
//! responses are small) or fails to (connect error, reset, timeout). Which outcomes are
//! worth another member of the shard is [`Outcome::retryable`]'s call.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Header carrying the router↔worker shared secret (see `docs/worker.md`).
pub const TOKEN_HEADER: &str = "x-shardline-token";
/// Header naming the model as the client called it (echoed as `model_name`).
pub const PUBLIC_NAME_HEADER: &str = "x-shardline-public-name";
/// Header naming the etcd revision the version was resolved at.
pub const REVISION_HEADER: &str = "x-shardline-revision";

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
    /// every other answer (success or 4xx) is final.
    pub fn retryable(&self) -> bool {
        match self {
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
        }
    }
}

/// A worker's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (worker down, refused).
    Connect(String),
    /// The attempt's time ran out.
    Timeout,
    /// The connection broke while the request or response was in flight.
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
    pub public_name: &'a str,
    pub revision: i64,
    pub timeout: Duration,
}

/// The pooled client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    token: HeaderValue,
}

impl Upstream {
    /// A client sending `token` to workers. Fails if the token is not a valid header value.
    pub fn new(token: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let mut token = HeaderValue::from_str(token)?;
        token.set_sensitive(true);
        Ok(Self { client, token })
    }

    /// Sends one attempt and reads the whole answer within `attempt.timeout`.
    pub async fn send(&self, attempt: Attempt<'_>) -> Outcome {
        let request = match self.request(&attempt) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(Failure::Connect(e)),
        };
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Connect(e.to_string())
                } else {
                    Failure::Broken(e.to_string())
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Failure::Broken(e.to_string()))?
                .to_bytes();
            Ok::<_, Failure>(Answer {
                status: parts.status,
                content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                retry_after: parts.headers.get(RETRY_AFTER).cloned(),
                body,
            })
        };
        match tokio::time::timeout(attempt.timeout, call).await {
            Ok(Ok(answer)) => Outcome::Answered(answer),
            Ok(Err(failure)) => Outcome::Failed(failure),
            Err(_) => Outcome::Failed(Failure::Timeout),
        }
    }

    fn request(&self, a: &Attempt<'_>) -> Result<Request<Full<Bytes>>, String> {
        let uri = format!("http://{}{}", a.address, a.path);
        let public = HeaderValue::from_str(a.public_name).map_err(|e| e.to_string())?;
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(TOKEN_HEADER, self.token.clone())
            .header(PUBLIC_NAME_HEADER, public)
            .header(REVISION_HEADER, HeaderValue::from(a.revision))
            .body(Full::new(a.body.clone()))
            .map_err(|e| format!("invalid worker address {:?}: {e}", a.address))
    }
}
