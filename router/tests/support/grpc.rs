//! A gRPC client for the router's suites: unary calls with the router's own generated
//! messages (prost messages encode as well as they decode) over hyper's HTTP/2 client —
//! not tonic's channel, which enforces `grpc-timeout` itself, so that what comes back is
//! always the server's answer — and the test venv's python for the `tritonclient`
//! scripts.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tonic::{Request, Status};
use tower::ServiceExt as _;

/// An HTTP/2 client of the gRPC listener at `addr` (plain, prior knowledge).
#[derive(Clone)]
pub struct Channel {
    addr: std::net::SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
}

/// A client of `addr`.
pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    Channel { addr, client }
}

/// One unary call of `method` (`/package.Service/Method`) with `key` as the bearer
/// token (when given) and `timeout` as `grpc-timeout` (set as a header only: this client
/// does not enforce it, so what comes back is the server's answer).
pub async fn call<Q, A>(
    channel: &Channel,
    method: &'static str,
    message: Q,
    key: Option<&str>,
    timeout: Option<Duration>,
) -> Result<tonic::Response<A>, Status>
where
    Q: prost::Message + Send + Sync + 'static,
    A: prost::Message + Default + Send + Sync + 'static,
{
    let addr = channel.addr;
    let service = channel
        .client
        .clone()
        .map_request(move |mut r: http::Request<Body>| {
            let path = r.uri().path().to_owned();
            *r.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
            r
        });
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready().await.unwrap();
    let mut request = Request::new(message);
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    let codec = tonic_prost::ProstCodec::<Q, A>::default();
    grpc.unary(request, PathAndQuery::from_static(method), codec)
        .await
}

/// `$SHARDLINE_PYTHON`, else the workspace's `.venv/bin/python`, else `python3` on `PATH`
/// (the test venv: `scripts/ensure-venv.sh`, with `tritonclient[all]`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARDLINE_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    shardline_testkit::on_path("python3").expect("python3 (the test venv) on PATH")
}
