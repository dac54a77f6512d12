//! The binary tensor data extension on real router and worker processes: binary
//! requests and answers through the router's fast path, through hyper (a chunked body)
//! and straight to the worker score bit for bit what the worker's JSON answer says, in
//! every mix of JSON and binary input and output; hostile binary requests get 400 with
//! their own message on every path and are never forwarded.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use shardline_testkit::TOKEN;
use shardline_testkit::fleet::{TestFleet, rows};
use shardline_testkit::hostile::{Answer, exchange};

/// The scores as `f32` bit patterns, from JSON `data` or the binary tail.
fn score_bits(answer: &Answer) -> Vec<u32> {
    let header = answer.json();
    let output = &header["outputs"][0];
    match output["parameters"]["binary_data_size"].as_u64() {
        Some(size) => {
            let n = answer.body.len() - size as usize;
            answer.body[n..]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
        None => output["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no scores in {header}"))
            .iter()
            .map(|v| (v.as_f64().unwrap() as f32).to_bits())
            .collect(),
    }
}

/// Sends one request (`connection: close`) and reads its answer.
async fn send(addr: &str, head: &str, body: &[u8], chunked: bool) -> Answer {
    let mut bytes = head.as_bytes().to_vec();
    if chunked {
        bytes.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        bytes.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    } else {
        let framing = format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        bytes.extend_from_slice(framing.as_bytes());
        bytes.extend_from_slice(body);
    }
    let got = exchange(addr, &bytes, Duration::from_secs(10)).await;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&got.bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "no answer ({other:?}): {:?}",
            String::from_utf8_lossy(&got.bytes)
        ),
    };
    Answer {
        status: response.code.unwrap(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: got.bytes[head_len..].to_vec(),
    }
}

/// A binary request body: `header` as JSON, then `tail`; and the JSON's length.
fn binary(header: &Value, tail: &[u8]) -> (Vec<u8>, usize) {
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    body.extend_from_slice(tail);
    (body, n)
}

fn tensor(datatype: &str, n_rows: usize, size: usize) -> Value {
    json!({"name": "features", "shape": [n_rows, 64], "datatype": datatype,
           "parameters": {"binary_data_size": size}})
}

/// The paths a request can take: the router's fast path, hyper (chunked), the worker.
#[derive(Debug, Clone, Copy)]
enum Via {
    FastPath,
    Hyper,
    Worker,
}

struct Target {
    router: String,
    worker: String,
    key: String,
}

impl Target {
    fn head(&self, via: Via, extra: &str) -> (String, bool) {
        let (path, auth) = match via {
            Via::Worker => (
                "/v2/models/acme.risk/infer",
                format!("x-shardline-token: {TOKEN}\r\n"),
            ),
            _ => (
                "/v2/models/risk/infer",
                format!("authorization: Bearer {}\r\n", self.key),
            ),
        };
        (
            format!("POST {path} HTTP/1.1\r\nhost: x\r\n{auth}{extra}"),
            matches!(via, Via::Hyper),
        )
    }

    fn addr(&self, via: Via) -> &str {
        match via {
            Via::Worker => &self.worker,
            _ => &self.router,
        }
    }

    async fn send(&self, via: Via, header_length: Option<usize>, body: &[u8]) -> Answer {
        let extra = header_length.map_or(String::new(), |n| {
            format!("inference-header-content-length: {n}\r\n")
        });
        let (head, chunked) = self.head(via, &extra);
        send(self.addr(via), &head, body, chunked).await
    }
}

async fn fleet() -> (TestFleet, Target) {
    let fleet = TestFleet::builder().workers(1).start().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    let target = Target {
        router: fleet.routers[0]
            .url
            .trim_start_matches("http://")
            .to_owned(),
        worker: fleet.workers[0]
            .url
            .trim_start_matches("http://")
            .to_owned(),
        key,
    };
    (fleet, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_scores_match_the_workers_json_answer_on_every_path() {
    let (fleet, target) = fleet().await;
    let batch = rows(64, 4);
    let expected = fleet.infer_direct(0, "acme", "risk", &batch).await;
    assert_eq!(expected.status, 200, "{:?}", expected.body);
    let expected: Vec<u32> = expected
        .scores()
        .iter()
        .map(|&x| (x as f32).to_bits())
        .collect();
    assert_eq!(expected.len(), 64);

    let flat: Vec<f32> = batch.iter().flatten().copied().collect();
    let fp32: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    let fp64: Vec<u8> = flat
        .iter()
        .flat_map(|&x| f64::from(x).to_le_bytes())
        .collect();
    let binary_out = json!([{"name": "risk", "parameters": {"binary_data": true}}]);
    let json_in = json!({"name": "features", "shape": [64, 64], "datatype": "FP32", "data": flat});
    let cases = [
        // (what, body, its header length, binary answer expected)
        (
            "fp32 in, binary out",
            binary(
                &json!({"inputs": [tensor("FP32", 64, fp32.len())], "outputs": binary_out}),
                &fp32,
            ),
            true,
        ),
        (
            "fp64 in, json out",
            binary(&json!({"inputs": [tensor("FP64", 64, fp64.len())]}), &fp64),
            false,
        ),
        (
            "fp32 in, binary_data_output",
            binary(
                &json!({"inputs": [tensor("FP32", 64, fp32.len())],
                           "parameters": {"binary_data_output": true}}),
                &fp32,
            ),
            true,
        ),
        (
            "json in, binary out",
            binary(&json!({"inputs": [json_in], "outputs": binary_out}), &[]),
            true,
        ),
    ];
    for (what, (body, n), binary_answer) in &cases {
        for via in [Via::FastPath, Via::Hyper, Via::Worker] {
            let answer = target.send(via, Some(*n), body).await;
            assert_eq!(
                answer.status,
                200,
                "{what} via {via:?}: {:?}",
                answer.json()
            );
            assert_eq!(score_bits(&answer), expected, "{what} via {via:?}");
            let header = answer.header("inference-header-content-length");
            let content_type = answer.header("content-type");
            if *binary_answer {
                assert_eq!(
                    header.unwrap().parse::<usize>().unwrap(),
                    answer.body.len() - 64 * 4
                );
                assert_eq!(
                    content_type,
                    Some("application/octet-stream"),
                    "{what} via {via:?}"
                );
            } else {
                assert_eq!(header, None, "{what} via {via:?}");
                assert_eq!(content_type, Some("application/json"), "{what} via {via:?}");
            }
            assert_eq!(answer.json()["outputs"][0]["shape"], json!([64, 1]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_binary_requests_get_400_and_are_never_forwarded() {
    let (fleet, target) = fleet().await;
    let one_row: Vec<u8> = rows(1, 2)[0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut nan = one_row.clone();
    nan[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let good = binary(&json!({"inputs": [tensor("FP32", 1, 256)]}), &one_row);
    let with_size = |size: Value| {
        let header = json!({"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32",
                                        "parameters": {"binary_data_size": size}}]});
        binary(&header, &one_row)
    };
    let header_value = |value: &str| format!("inference-header-content-length: {value}\r\n");
    // (what, extra header lines, body, words of the refusal)
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "header beyond the body",
            header_value(&(good.0.len() + 1).to_string()),
            good.0.clone(),
            "but the body has only",
        ),
        (
            "negative header length",
            header_value("-5"),
            good.0.clone(),
            "is not a number of bytes",
        ),
        (
            "overflowing header length",
            header_value("99999999999999999999999"),
            good.0.clone(),
            "is not a number of bytes",
        ),
        (
            "negative binary_data_size",
            header_value(&with_size(json!(-256)).1.to_string()),
            with_size(json!(-256)).0,
            "must be a non-negative integer",
        ),
        (
            "overflowing binary_data_size",
            header_value(&with_size(json!(1e20)).1.to_string()),
            with_size(json!(1e20)).0,
            "must be a non-negative integer",
        ),
        (
            "binary_data_size of u64::MAX",
            header_value(&with_size(json!(u64::MAX)).1.to_string()),
            with_size(json!(u64::MAX)).0,
            "needs 256",
        ),
        (
            "size disagreeing with the shape",
            header_value(&with_size(json!(252)).1.to_string()),
            with_size(json!(252)).0,
            "is 252 bytes but shape [1, 64] of FP32 needs 256",
        ),
        (
            "zero-byte tensor",
            header_value(
                &binary(&json!({"inputs": [tensor("FP32", 0, 0)]}), &[])
                    .1
                    .to_string(),
            ),
            binary(&json!({"inputs": [tensor("FP32", 0, 0)]}), &[]).0,
            "has no rows",
        ),
        (
            "size zero for a row",
            header_value(&with_size(json!(0)).1.to_string()),
            with_size(json!(0)).0,
            "needs 256",
        ),
        (
            "body shorter than the size",
            header_value(&good.1.to_string()),
            good.0[..good.0.len() - 4].to_vec(),
            "goes beyond the body",
        ),
        (
            "bytes no input claims",
            header_value(&good.1.to_string()),
            [&good.0[..], &[0; 4]].concat(),
            "belong to no input",
        ),
        (
            "binary without the header",
            String::new(),
            good.0.clone(),
            "not valid json",
        ),
        (
            "non-finite value",
            header_value(&good.1.to_string()),
            binary(&json!({"inputs": [tensor("FP32", 1, 256)]}), &nan).0,
            "NaN at position 2 is not finite",
        ),
        (
            "too many rows",
            header_value(
                &binary(&json!({"inputs": [tensor("FP32", 100_000, 256)]}), &one_row)
                    .1
                    .to_string(),
            ),
            binary(&json!({"inputs": [tensor("FP32", 100_000, 256)]}), &one_row).0,
            "exceeds the limit",
        ),
    ];
    let forwarded = || fleet.router_metric(0, "shardline_router_upstream_requests_total");
    let before = forwarded().await;
    for (what, extra, body, words) in &cases {
        for via in [Via::FastPath, Via::Hyper, Via::Worker] {
            let (head, chunked) = target.head(via, extra);
            let answer = send(target.addr(via), &head, body, chunked).await;
            let message = answer.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(answer.status, 400, "{what} via {via:?}: {message}");
            assert!(
                message.contains(words),
                "{what} via {via:?}: {message:?} should say {words:?}"
            );
        }
    }
    assert_eq!(forwarded().await, before, "a hostile request was forwarded");
    // The good request itself is served, and forwarded once.
    let answer = target.send(Via::FastPath, Some(good.1), &good.0).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(forwarded().await, before + 1.0);
}
