//! HTTP/1.1 on the wire against a real router process: the inference fast path and
//! hyper answer byte-level clients alike — pipelined requests, heads and bodies split
//! across reads, `Connection: close`, and the requests the fast path leaves to hyper
//! (chunked bodies, `Expect: 100-continue`, HTTP/1.0, other routes, malformed or
//! oversized requests) on the same connection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shardline_testkit::fleet::{TestFleet, infer_body, rows};
use shardline_testkit::hostile::Answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn scores(answer: &Answer) -> Vec<f64> {
    let body = answer.json();
    body["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {body}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// A raw client connection that reads answers framed by `content-length`.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn connect(url: &str) -> Self {
        let addr = url.trim_start_matches("http://");
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one answer (interim `1xx` answers are returned like any other).
    async fn answer(&mut self) -> Answer {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(head) = response.parse(&self.buf).unwrap() {
                    let status = response.code.unwrap();
                    let headers: Vec<(String, String)> = response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8(h.value.to_vec()).unwrap(),
                            )
                        })
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    if self.buf.len() >= head + length {
                        let body = self.buf[head..head + length].to_vec();
                        self.buf.drain(..head + length);
                        return Answer {
                            status,
                            headers,
                            body,
                        };
                    }
                }
                let mut chunk = [0u8; 8192];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before a whole answer");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("an answer within 10 s")
    }

    /// True once the server has closed the connection (and sent nothing more).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0))
        )
    }
}

fn infer_request(model_path: &str, key: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {model_path} HTTP/1.1\r\nhost: router\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A fleet of one worker and one router where tenant `acme` (its key returned) has model
/// `risk` placed; and the router's URL.
async fn one_worker_fleet() -> (TestFleet, String, String) {
    let fleet = TestFleet::builder().workers(1).start().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    let url = fleet.routers[0].url.clone();
    (fleet, key, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_level_clients_get_the_same_answers_from_the_fast_path_and_hyper() {
    let (fleet, key, url) = one_worker_fleet().await;
    let batch = rows(3, 9);
    let expected = fleet.infer_direct(0, "acme", "risk", &batch).await;
    assert_eq!(expected.status, 200, "{:?}", expected.body);
    let expected = expected.scores();
    let body = serde_json::to_vec(&infer_body(&batch)).unwrap();
    let path = "/v2/models/risk/infer";

    // Two pipelined inferences in one write, then another route on the same
    // connection (hyper from then on), then an inference again.
    let mut wire = Wire::connect(&url).await;
    let mut bytes = infer_request(path, &key, &body, "");
    bytes.extend(infer_request(
        "/v2/models/risk/versions/1/infer",
        &key,
        &body,
        "",
    ));
    bytes.extend_from_slice(b"GET /v2/health/live HTTP/1.1\r\nhost: router\r\n\r\n");
    bytes.extend(infer_request(path, &key, &body, ""));
    wire.send(&bytes).await;
    for i in 0..4 {
        let answer = wire.answer().await;
        assert_eq!(answer.status, 200, "answer {i}: {answer:?}");
        assert!(answer.header("date").is_some(), "answer {i} has no date");
        if i != 2 {
            assert_eq!(scores(&answer), expected, "answer {i}");
            assert_eq!(answer.header("content-type"), Some("application/json"));
            assert_eq!(
                answer.header("x-shardline-worker"),
                Some(fleet.workers[0].id.as_str())
            );
        }
    }

    // A request split in every place: byte by byte through the head, then the body in
    // two halves.
    let mut wire = Wire::connect(&url).await;
    let request = infer_request(path, &key, &body, "x-shardline-deadline-ms: 5000\r\n");
    let head_end = request.len() - body.len();
    for b in &request[..head_end] {
        wire.send(std::slice::from_ref(b)).await;
    }
    let half = head_end + body.len() / 2;
    wire.send(&request[head_end..half]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    wire.send(&request[half..]).await;
    let answer = wire.answer().await;
    assert_eq!(scores(&answer), expected);

    // Refusals on the fast path are the router's JSON errors. A request without a
    // valid key is refused from its head alone, and its connection is closed rather than
    // its body waited for.
    let unauthenticated = infer_request(path, "wrong-key", &body, "");
    wire.send(&unauthenticated[..unauthenticated.len() - body.len()])
        .await;
    let refused = wire.answer().await;
    assert_eq!(refused.status, 401);
    assert!(refused.header("www-authenticate").is_some());
    assert!(refused.json()["error"].is_string());
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(wire.closed().await);
    // A tenant's refused requests keep the connection usable.
    let mut wire = Wire::connect(&url).await;
    wire.send(&infer_request("/v2/models/nope/infer", &key, &body, ""))
        .await;
    assert_eq!(wire.answer().await.status, 404);
    wire.send(&infer_request(path, &key, b"{\"inputs\": 3}", ""))
        .await;
    assert_eq!(wire.answer().await.status, 400);
    wire.send(&infer_request(
        path,
        &key,
        &body,
        "x-shardline-deadline-ms: soon\r\n",
    ))
    .await;
    assert_eq!(wire.answer().await.status, 400);
    wire.send(&infer_request(path, &key, &body, "")).await;
    assert_eq!(scores(&wire.answer().await), expected);

    // `Connection: close`: answered, marked, then closed.
    wire.send(&infer_request(path, &key, &body, "connection: close\r\n"))
        .await;
    let answer = wire.answer().await;
    assert_eq!(scores(&answer), expected);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(wire.closed().await);

    // A chunked body (hyper's).
    let mut wire = Wire::connect(&url).await;
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nhost: router\r\nauthorization: Bearer {key}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let (a, b) = body.split_at(body.len() / 3);
    for part in [a, b] {
        chunked.extend(format!("{:x}\r\n", part.len()).into_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    wire.send(&chunked).await;
    assert_eq!(scores(&wire.answer().await), expected);
    // ... and the fast-path form on the same (now hyper's) connection.
    wire.send(&infer_request(path, &key, &body, "")).await;
    assert_eq!(scores(&wire.answer().await), expected);

    // `Expect: 100-continue`: the interim answer comes before the body is sent.
    let mut wire = Wire::connect(&url).await;
    let request = infer_request(path, &key, &body, "expect: 100-continue\r\n");
    wire.send(&request[..request.len() - body.len()]).await;
    let interim = wire.answer().await;
    assert_eq!(interim.status, 100);
    wire.send(&body).await;
    assert_eq!(scores(&wire.answer().await), expected);

    // HTTP/1.0.
    let mut wire = Wire::connect(&url).await;
    let mut request = infer_request(path, &key, &body, "");
    request
        .windows(8)
        .position(|w| w == b"HTTP/1.1")
        .map(|i| request[i..i + 8].copy_from_slice(b"HTTP/1.0"))
        .unwrap();
    wire.send(&request).await;
    assert_eq!(scores(&wire.answer().await), expected);

    // Over the body limit (declared): refused with 413 before the body is read.
    let mut wire = Wire::connect(&url).await;
    wire.send(
        format!(
            "POST {path} HTTP/1.1\r\nhost: router\r\nauthorization: Bearer {key}\r\n\
             content-length: {}\r\n\r\n",
            64 << 20
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(wire.answer().await.status, 413);

    // Malformed heads get hyper's 400, and the router keeps serving.
    for garbage in [
        &b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: x\r\n\r\n"[..],
        b"NOT HTTP AT ALL\r\n\r\n",
    ] {
        let mut wire = Wire::connect(&url).await;
        wire.send(garbage).await;
        let answer = wire.answer().await;
        assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(garbage));
    }
    let again = fleet.infer(0, &key, "risk", &batch).await;
    assert_eq!(again.scores(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_finishes_a_request_in_flight() {
    let (mut fleet, key, url) = one_worker_fleet().await;
    let batch = rows(2, 4);
    let expected = fleet.infer(0, &key, "risk", &batch).await.scores();
    let body = serde_json::to_vec(&infer_body(&batch)).unwrap();
    let request = infer_request("/v2/models/risk/infer", &key, &body, "");

    // An idle keep-alive connection, and one whose request is half sent.
    let mut idle = Wire::connect(&url).await;
    idle.send(&request).await;
    assert_eq!(scores(&idle.answer().await), expected);
    let mut busy = Wire::connect(&url).await;
    let half = request.len() - body.len() / 2;
    busy.send(&request[..half]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let pid = fleet.routers[0].pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        idle.closed().await,
        "the idle connection is closed at shutdown"
    );
    busy.send(&request[half..]).await;
    let answer = busy.answer().await;
    assert_eq!(
        scores(&answer),
        expected,
        "the request in flight is answered"
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(busy.closed().await);
    let exited = tokio::time::timeout(Duration::from_secs(10), async {
        while fleet.routers[0].is_running() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        exited.is_ok(),
        "the router exits once its connections are done"
    );
    assert!(
        TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .is_err()
    );
}
