//! Fuzz-style property tests of the fast path's HTTP/1.1 head reading: arbitrary bytes
//! and mutated request heads go through the same parse the fast path runs (`httparse`
//! with at most 64 headers, then [`classify`]) — never a panic — and whenever the fast
//! path would serve a head itself, hyper (which serves everything else, and would serve
//! this request if the fast path did not) reads the same request from the same bytes:
//! method, path, the single `Content-Length`, the first `Authorization`, and a body of
//! that length.
#![allow(clippy::unwrap_used)]

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use shardline_router::codec::{InferHead, classify, infer_route};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The fast path's header limit (`router/src/http1/connection.rs`).
const MAX_HEADERS: usize = 64;
const MAX_BODY: usize = 1 << 10;

/// What the fast path makes of `bytes`: `None` unless they start with a complete head it
/// serves itself; else that head and its length.
fn fast_path(bytes: &[u8]) -> Option<(InferHead<'_>, usize)> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => classify(&req, MAX_BODY).map(|h| (h, len)),
        _ => None,
    }
}

/// What hyper read from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    method: String,
    path: String,
    query: Option<String>,
    content_length: Vec<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    body: usize,
}

/// Serves `bytes` (then end of stream) on one hyper HTTP/1.1 connection; the first
/// request hyper handed to its service, if any.
async fn hyper_reads(bytes: Vec<u8>) -> Option<Read> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let seen = Arc::new(Mutex::new(None));
    let service = {
        let seen = seen.clone();
        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(Body::new(body), usize::MAX).await;
                let read = Read {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    content_length: parts
                        .headers
                        .get_all("content-length")
                        .iter()
                        .map(|v| v.as_bytes().to_vec())
                        .collect(),
                    authorization: parts
                        .headers
                        .get("authorization")
                        .map(|v| v.as_bytes().to_vec()),
                    body: body.map_or(usize::MAX, |b| b.len()),
                };
                seen.lock().unwrap().get_or_insert(read);
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::empty()))
            }
        })
    };
    // Half-close: the client's end of stream must not cancel the request it ends.
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(server), service);
    let talk = async move {
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(conn, talk) }).await;
    seen.lock().unwrap().take()
}

/// Checks one input: the fast path never panics, and when it serves the head, hyper
/// reads the same request.
fn agrees(bytes: &[u8], runtime: &tokio::runtime::Runtime) -> Result<(), TestCaseError> {
    let Some((head, head_len)) = fast_path(bytes) else {
        return Ok(());
    };
    let mut request = bytes[..head_len].to_vec();
    request.resize(head_len + head.content_length, b'x');
    let read = runtime.block_on(hyper_reads(request));
    let shown = String::from_utf8_lossy(&bytes[..head_len]).into_owned();
    let read = read.ok_or_else(|| TestCaseError::fail(format!("hyper refused {shown:?}")))?;
    prop_assert_eq!(&read.method, "POST", "{}", shown);
    prop_assert_eq!(read.query, None, "{}", shown);
    prop_assert_eq!(
        infer_route(&read.path),
        Some((head.model, head.version)),
        "{}",
        shown
    );
    let lengths: Vec<Option<usize>> = read
        .content_length
        .iter()
        .map(|v| String::from_utf8_lossy(v).trim().parse().ok())
        .collect();
    prop_assert_eq!(lengths, vec![Some(head.content_length)], "{}", shown);
    prop_assert_eq!(read.body, head.content_length, "{}", shown);
    prop_assert_eq!(
        read.authorization.as_deref(),
        head.authorization,
        "{}",
        shown
    );
    Ok(())
}

/// A request head the fast path might serve: an infer path (sometimes odd), some of the
/// headers it reads or refuses, in any order, with plausible and implausible values.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let path = prop_oneof![
        8 => Just("/v2/models/risk/infer".to_owned()),
        2 => "[a-zA-Z0-9._~!$&'()*+,;=:@%/-]{1,12}".prop_map(|m| format!("/v2/models/{m}/infer")),
        1 => "[ -~]{1,8}".prop_map(|v| format!("/v2/models/risk/versions/{v}/infer")),
        1 => "[ -~]{0,20}",
    ];
    let length = prop_oneof![
        6 => "[ \t]?[0-9]{1,3}[ \t]?".prop_map(|v| format!("Content-Length:{v}")),
        1 => "[ -~]{0,12}".prop_map(|v| format!("content-length: {v}")),
    ];
    let header = prop_oneof![
        1 => length.clone(),
        6 => "[ -~]{0,20}".prop_map(|v| format!("Authorization: Bearer {v}")),
        1 => "[0-9 ]{0,6}".prop_map(|v| format!("x-shardline-deadline-ms: {v}")),
        1 => prop::sample::select(vec!["close", "keep-alive", "Close, x", ""])
            .prop_map(|v| format!("Connection: {v}")),
        1 => prop::sample::select(vec!["chunked", "gzip, chunked", "identity"])
            .prop_map(|v| format!("Transfer-Encoding: {v}")),
        1 => Just("Expect: 100-continue".to_owned()),
        4 => "[!-9;-~]{1,10}: [ -~]{0,10}",
    ];
    (
        prop::sample::select(vec!["POST", "POST", "POST", "POST", "POST", "GET", "post"]),
        path,
        prop::sample::select(vec![
            "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0",
        ]),
        prop::option::weighted(0.9, length),
        prop::collection::vec(header, 0..5),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(method, path, version, length, mut headers, at)| {
            if let Some(length) = length {
                headers.insert(at.index(headers.len() + 1), length);
            }
            let mut head = format!("{method} {path} {version}\r\nHost: x\r\n");
            for h in headers {
                head.push_str(&h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            head.into_bytes()
        })
}

/// One edit of a head: overwrite, insert or delete a byte, with bytes that matter to
/// HTTP framing weighted up.
#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"\r\n \t:,;0123456789/%?#\"\x00\x7f\xff".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Delete),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        match e {
            Edit::Set(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Edit::Delete(i) => {
                bytes.remove(i.index(bytes.len()));
            }
        }
    }
    bytes
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_disagree(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        agrees(&bytes, &runtime())?;
    }

    #[test]
    fn generated_heads_are_read_alike(head in head()) {
        agrees(&head, &runtime())?;
    }

    #[test]
    fn mutated_heads_never_panic_and_never_disagree(
        head in head(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        agrees(&apply(head, &edits), &runtime())?;
    }
}

/// The generators reach the interesting part: most generated heads, and many mutated
/// ones, are heads the fast path serves (so the comparison with hyper runs).
#[test]
fn the_fast_path_serves_many_generated_heads() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut plain, mut mutated) = (0, 0);
    for _ in 0..400 {
        let h = head().new_tree(&mut runner).unwrap().current();
        let e = prop::collection::vec(edit(), 1..4)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        plain += usize::from(fast_path(&h).is_some());
        mutated += usize::from(fast_path(&apply(h, &e)).is_some());
    }
    assert!(
        plain >= 60 && mutated >= 10,
        "served {plain} and {mutated} of 400"
    );
}
