//! The HTTP/1.1 client both the benchmarks' closed-loop client (`crate::bench::load`) and
//! the load generator (`crate::loadgen`) send their requests with: one [`RequestSpec`]
//! sent again and again on raw hyper 1 `http1` keep-alive connections ([`connect`],
//! [`exchange`]), and the bounded list of distinct error messages a run keeps
//! ([`keep_error`]). A leaf: it imports nothing from the crate.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
        })
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
    let mut sender = connect(spec.addr).await?;
    exchange(&mut sender, spec).await
}

/// Opens a keep-alive HTTP/1.1 connection to `addr` (no Nagle); its driver runs on a
/// task of its own until either side closes it.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
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
