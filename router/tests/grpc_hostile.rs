//! Hostile clients against the router's gRPC listener (real router and worker
//! processes): connections that send nothing, or only the HTTP/2 preface, are closed
//! after the header timeout; an HTTP/2 connection left idle after a call is closed after
//! the idle timeout; connections over `--max-connections` are closed at once while a
//! legitimate client scores once they are gone; `--grpc-max-concurrent-streams` is
//! what the listener's SETTINGS announce; at shutdown a `ModelInfer` in flight (its
//! message still arriving) is answered, then the router exits. Timeouts are a second here.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use shardline_router::grpc::pb::model_infer_request::InferInputTensor;
use shardline_router::grpc::pb::{ModelInferRequest, ModelInferResponse};
use shardline_testkit::fleet::{DIM, Node, TestFleet};
use shardline_testkit::hostile::hold;
use shardline_testkit::models::mlp::INPUT_NAME;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// The client connection preface of HTTP/2, then an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// One worker with tenant `acme`'s model `risk` placed on it (its key returned), and a
/// router serving gRPC with one-second timeouts and `extra` flags.
async fn fleet(extra: &[(&str, &str)]) -> (TestFleet, Node, SocketAddr, String) {
    let mut fleet = TestFleet::builder().workers(1).routers(0).start().await;
    fleet.add_router().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    fleet.routers.clear();
    let grpc = SocketAddr::from(([127, 0, 0, 1], shardline_testkit::free_port()));
    let mut spec = fleet
        .router_spec("r-grpc")
        .set("--grpc-listen", grpc.to_string())
        .set("--header-timeout", "1s")
        .set("--idle-timeout", "1s");
    for (flag, value) in extra {
        spec = spec.set(flag, *value);
    }
    let node = fleet.start_node(spec).await;
    (fleet, node, grpc, key)
}

/// A plain HTTP/2 connection to `addr`.
async fn connect(addr: SocketAddr) -> http2::SendRequest<StreamBody<Feed>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A request body fed through a channel, so that a test decides when its bytes arrive.
#[derive(Debug)]
struct Feed(mpsc::Receiver<Bytes>);

impl futures::Stream for Feed {
    type Item = Result<Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A ModelInfer call of 2 rows, framed (5-byte prefix).
fn framed_call() -> Bytes {
    let data: Vec<u8> = (0..2 * DIM)
        .flat_map(|i| (i as f32 / 100.0).to_le_bytes())
        .collect();
    let message = ModelInferRequest {
        model_name: "risk".into(),
        inputs: vec![InferInputTensor {
            name: INPUT_NAME.into(),
            datatype: "FP32".into(),
            shape: vec![2, DIM as i64],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![Bytes::from(data)],
        ..ModelInferRequest::default()
    }
    .encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    Bytes::from(out)
}

/// A call's `grpc-status` and answer, or why none came.
type Answer = Result<(String, Option<ModelInferResponse>), String>;

/// Sends a call on `sender` whose body is fed from the returned channel; the answer's
/// `grpc-status` and message once the body is complete.
fn call(
    sender: &mut http2::SendRequest<StreamBody<Feed>>,
    addr: SocketAddr,
    key: &str,
) -> (
    mpsc::Sender<Bytes>,
    impl Future<Output = Answer> + Send + use<>,
) {
    let (tx, rx) = mpsc::channel(4);
    let request = http::Request::post(format!("http://{addr}{INFER}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"))
        .body(StreamBody::new(Feed(rx)))
        .unwrap();
    let sent = sender.send_request(request);
    let answer = async move {
        let resp = sent.await.map_err(|e| e.to_string())?;
        let (head, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = body.trailers().cloned().unwrap_or_default();
        let status = trailers
            .get("grpc-status")
            .or_else(|| head.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = body.to_bytes();
        let message = (bytes.len() > 5).then(|| ModelInferResponse::decode(&bytes[5..]).unwrap());
        Ok((status, message))
    };
    (tx, answer)
}

/// One whole call on a new connection: its `grpc-status`.
async fn score(addr: SocketAddr, key: &str) -> String {
    let mut sender = connect(addr).await;
    let (tx, answer) = call(&mut sender, addr, key);
    tx.send(framed_call()).await.unwrap();
    drop(tx);
    answer.await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_preface_only_and_idle_connections_are_closed() {
    let (_fleet, _node, grpc, key) = fleet(&[]).await;
    shardline_testkit::eventually!(Duration::from_secs(30), "a first OK over gRPC", {
        score(grpc, &key).await == "0"
    });
    let addr = grpc.to_string();
    let opened = Instant::now();
    let silent = hold(&addr, 20, b"").await;
    let preface = hold(&addr, 20, PREFACE).await;
    // An HTTP/2 connection that made one call and then idles.
    let mut idle = connect(grpc).await;
    let (tx, answer) = call(&mut idle, grpc, &key);
    tx.send(framed_call()).await.unwrap();
    drop(tx);
    assert_eq!(answer.await.unwrap().0, "0");
    let answered = Instant::now();

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        silent.closed() + preface.closed(),
        0,
        "closed before the timeout"
    );
    assert!(!idle.is_closed(), "closed before the idle timeout");
    assert_eq!(silent.wait_closed(Duration::from_secs(5)).await, 20);
    assert_eq!(preface.wait_closed(Duration::from_secs(5)).await, 20);
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    shardline_testkit::eventually!(Duration::from_secs(5), "the idle connection closed", {
        idle.is_closed()
    });
    let idle_for = answered.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after {idle_for:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_for_grpc_and_a_client_scores_after_the_flood() {
    let (_fleet, node, grpc, key) = fleet(&[("--max-connections", "10")]).await;
    shardline_testkit::eventually!(Duration::from_secs(30), "a first OK over gRPC", {
        score(grpc, &key).await == "0"
    });
    // 50 connections that send nothing: 10 fill the limit, 40 are closed at once.
    let held = hold(&grpc.to_string(), 50, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (The probe's connection may not have been counted out yet: one slot fewer.)
    let open = held.len() - held.closed();
    assert!(
        (9..=10).contains(&open),
        "{open} held open over a limit of 10"
    );
    assert!(node.metric("shardline_connections_refused_total").await >= 40.0);
    // The 10 go at the header timeout; then a client scores.
    assert_eq!(held.wait_closed(Duration::from_secs(5)).await, 50);
    assert_eq!(score(grpc, &key).await, "0");
}

/// The SETTINGS a server sends first: (identifier, value) pairs.
async fn server_settings(addr: SocketAddr) -> Vec<(u16, u32)> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "the first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_per_connection_are_the_flag() {
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    let (_fleet, _node, grpc, _key) = fleet(&[("--grpc-max-concurrent-streams", "7")]).await;
    assert!(
        server_settings(grpc)
            .await
            .contains(&(MAX_CONCURRENT_STREAMS, 7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_call_in_flight_then_exits() {
    let (_fleet, mut node, grpc, key) =
        fleet(&[("--shutdown-grace", "10s"), ("--body-timeout", "10s")]).await;
    shardline_testkit::eventually!(Duration::from_secs(30), "a first OK over gRPC", {
        score(grpc, &key).await == "0"
    });
    // A call whose message is half sent when the router is told to stop.
    let mut sender = connect(grpc).await;
    let (tx, answer) = call(&mut sender, grpc, &key);
    let answer = tokio::spawn(answer);
    let body = framed_call();
    let half = body.len() / 2;
    tx.send(body.slice(..half)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = Instant::now();
    shardline_testkit::send_signal(node.pid().unwrap(), "TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node.is_running(), "exited with a call in flight");
    // New connections are no longer taken.
    assert!(TcpStream::connect(grpc).await.is_err(), "still accepting");
    tx.send(body.slice(half..)).await.unwrap();
    drop(tx);
    let (status, message) = answer.await.unwrap().unwrap();
    assert_eq!(status, "0");
    let scores = message.unwrap().raw_output_contents;
    assert_eq!(scores[0].len(), 2 * 4, "two FP32 scores");
    while node.is_running() && stopped.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
}
