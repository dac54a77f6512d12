//! The HTTP/1.1 client both the benchmarks' closed-loop client (`crate::bench::load`) and
//! the load generator (`crate::loadgen`) send their requests with: one [`RequestSpec`]
//! sent again and again on raw hyper 1 `http1` keep-alive connections ([`connect`],
//! [`exchange`]), and the bounded list of distinct error messages a run keeps
//! ([`keep_error`]). A leaf: it imports nothing from the crate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
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

/// One request on a fresh connection: the status and the whole body (for checks before
/// a run).
pub async fn once(spec: &RequestSpec) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect_to(spec).await?;
    exchange(&mut sender, spec).await
}

/// Opens a keep-alive connection for `spec`: over TLS when it says so, else [`connect`].
pub async fn connect_to(spec: &RequestSpec) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let Some(tls) = &spec.tls else {
        return connect(spec.addr).await;
    };
    let stream = tcp(spec.addr).await?;
    let name = ServerName::IpAddress(spec.addr.ip().into());
    http1(tls.0.connect(name, stream).await?).await
}

/// Opens a keep-alive HTTP/1.1 connection to `addr` (no Nagle); its driver runs on a
/// task of its own until either side closes it.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    http1(tcp(addr).await?).await
}

/// A TCP connection to `addr`, without Nagle.
async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// HTTP/1.1 on `stream`, its driver on a task of its own.
async fn http1<S>(stream: S) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the server or the client closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `spec` on `sender` once it is ready, and reads the status and the whole body.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    spec: &RequestSpec,
) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(spec.request()?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
