//! The client both the benchmarks' closed-loop client (`crate::bench::load`) and the load
//! generator (`crate::loadgen`) send their requests with: one [`RequestSpec`] sent again
//! and again on raw hyper 1 keep-alive connections ([`connect`], [`exchange`]) — HTTP/1.1
//! for the REST protocols, HTTP/2 for gRPC (a [`Sender`] of either kind; an HTTP/2 one is
//! cloned to carry many concurrent streams) — and the bounded list of distinct error
//! messages a run keeps ([`keep_error`]). It imports only the [`crate::grpc`] leaf.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Concurrent gRPC calls per HTTP/2 connection: `--concurrency 32` makes 4 connections.
/// Few enough to show HTTP/2's multiplexing (one connection per call would be HTTP/1.1
/// again), several so that a router serving each connection on one of its threads
/// (`--threads`) spreads the load over them, as several clients would.
pub const GRPC_STREAMS_PER_CONNECTION: usize = 8;

/// How many distinct error messages a run keeps.
pub const KEPT_ERRORS: usize = 5;

/// One request, sent unchanged again and again.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub addr: SocketAddr,
    /// Origin-form target, e.g. `/v2/models/m/infer`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Sent over TLS with this connector (trusting the server's certificate), or plain.
    pub tls: Option<Tls>,
    /// A gRPC call: sent over HTTP/2 (prior knowledge), `body` a framed message, and
    /// judged by its `grpc-status` ([`crate::grpc::outcome`]).
    pub grpc: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// A TLS client trusting exactly the certificate in a PEM file (a self-signed one, in
/// the benchmarks).
#[derive(Clone)]
pub struct Tls(pub TlsConnector);

impl Tls {
    pub fn trusting(pem: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pem)?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(TlsConnector::from(Arc::new(config))))
    }
}

impl RequestSpec {
    /// A JSON `POST` to `addr` + `path` with the extra `headers`.
    pub fn post_json(
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in extra {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        Ok(Self {
            addr,
            path: path.to_owned(),
            headers,
            body,
            tls: None,
            grpc: false,
        })
    }

    /// A gRPC `ModelInfer` call of `model` to `addr` with `key` as the bearer token:
    /// `message` is an encoded `ModelInferRequest` without its model name.
    pub fn grpc_infer(
        addr: SocketAddr,
        model: &str,
        key: &str,
        message: &[u8],
    ) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        Ok(Self {
            addr,
            path: shardline_proto::MODEL_INFER_PATH.to_owned(),
            headers,
            body: crate::grpc::call_body(message, model)?,
            tls: None,
            grpc: true,
        })
    }

    /// The same request with `extra` headers added (replacing any of the same name).
    pub fn with_headers(mut self, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        for (name, value) in extra {
            self.headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        Ok(self)
    }

    /// The same request over TLS.
    pub fn over_tls(mut self, tls: &Tls) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        // HTTP/2 needs the scheme and authority (its pseudo-headers); HTTP/1.1 has `host`.
        let uri = if self.grpc {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}{}", self.addr, self.path)
        } else {
            self.path.clone()
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(self.body.clone()))?;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

/// Adds `message` to `kept` unless it is already there or [`KEPT_ERRORS`] are kept.
pub fn keep_error(kept: &mut Vec<String>, message: String) {
    if kept.len() < KEPT_ERRORS && !kept.contains(&message) {
        kept.push(message);
    }
}

/// A keep-alive connection: HTTP/1.1 (one request at a time) or HTTP/2 (clone it to
/// send concurrent streams on the same connection).
#[derive(Debug)]
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    /// Another handle on the same connection: HTTP/2 only.
    pub fn stream(&self) -> Option<Self> {
        match self {
            Sender::Http1(_) => None,
            Sender::Http2(s) => Some(Sender::Http2(s.clone())),
        }
    }
}

/// One request on a fresh connection: the status and the whole body (for checks before
/// a run).
pub async fn once(spec: &RequestSpec) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect_to(spec).await?;
    exchange(&mut sender, spec).await
}

/// Opens a keep-alive connection for `spec`: over TLS when it says so, HTTP/2 for gRPC.
pub async fn connect_to(spec: &RequestSpec) -> anyhow::Result<Sender> {
    let Some(tls) = &spec.tls else {
        return connect(spec.addr, spec.grpc).await;
    };
    let stream = tcp(spec.addr).await?;
    let name = ServerName::IpAddress(spec.addr.ip().into());
    handshake(tls.0.connect(name, stream).await?, spec.grpc).await
}

/// Opens a keep-alive connection to `addr` (no Nagle), HTTP/2 when `http2`; its driver
/// runs on a task of its own until either side closes it.
pub async fn connect(addr: SocketAddr, http2: bool) -> anyhow::Result<Sender> {
    handshake(tcp(addr).await?, http2).await
}

/// A TCP connection to `addr`, without Nagle.
async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// HTTP/1.1 or HTTP/2 on `stream`, its driver on a task of its own.
async fn handshake<S>(stream: S, h2: bool) -> anyhow::Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            // Ends when the server or the client closes the connection.
            let _ = conn.await;
        });
        return Ok(Sender::Http2(sender));
    }
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::Http1(sender))
}

/// Sends `spec` on `sender` once it is ready, and reads the status and the whole body.
/// A gRPC call's status is its `grpc-status` as the REST API's status (200 for OK), its
/// body the answer's message, or `grpc-status N: message` for a refusal.
pub async fn exchange(
    sender: &mut Sender,
    spec: &RequestSpec,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = match sender {
        Sender::Http1(s) => {
            s.ready().await?;
            s.send_request(spec.request()?).await?
        }
        Sender::Http2(s) => {
            s.ready().await?;
            s.send_request(spec.request()?).await?
        }
    };
    let status = resp.status();
    let (head, body) = resp.into_parts();
    let collected = body.collect().await?;
    if !spec.grpc || status != StatusCode::OK {
        return Ok((status, collected.to_bytes()));
    }
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    match crate::grpc::outcome(&head.headers, trailers.as_ref()) {
        Ok(()) => Ok((StatusCode::OK, body)),
        Err((code, message)) => Ok((
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Bytes::from(message),
        )),
    }
}
