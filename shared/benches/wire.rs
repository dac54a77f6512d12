//! The router → worker wire format, measured: CPU per request of the decoding each side
//! does, for the two choices — forward the client's bytes as they came (the router
//! validates without keeping values, the worker decodes) or convert every request to
//! binary tensor data at the router (the router decodes JSON whole and writes binary,
//! the worker reads binary) — for JSON and binary clients, 1 and 64 rows of the 64-wide
//! model. Single-threaded, release; prints one line per case (median of 7 runs). Run with
//! `cargo bench -p shardline-shared --bench wire`; the figures are in docs/decisions.md.

#![allow(clippy::unwrap_used)] // a benchmark: its bodies are valid, a failure ends it

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use shardline_shared::decode::{
    DEFAULT_MAX_ROWS, InputSpec, decode_infer, decode_request, validate_request,
};

const DIM: usize = 64;

fn spec() -> InputSpec<'static> {
    InputSpec {
        name: "features",
        dim: DIM,
        output_name: "score",
        max_rows: DEFAULT_MAX_ROWS,
    }
}

/// Deterministic features with the digits a client's JSON encoder writes for `f32`s.
fn values(rows: usize) -> Vec<f32> {
    (0..rows * DIM)
        .map(|i| ((i * 7919 % 1000) as f32 / 997.0) - 0.5)
        .collect()
}

fn json_body(rows: usize) -> Vec<u8> {
    json!({"inputs": [{"name": "features", "shape": [rows, DIM], "datatype": "FP32",
                       "data": values(rows)}]})
    .to_string()
    .into_bytes()
}

/// A binary request of `data` (what the router would write when converting).
fn binary_body(rows: usize, data: &[f32]) -> (Vec<u8>, usize) {
    let header = json!({"inputs": [{"name": "features", "shape": [rows, DIM], "datatype": "FP32",
                        "parameters": {"binary_data_size": data.len() * 4}}]});
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    body.reserve(data.len() * 4);
    for x in data {
        body.extend_from_slice(&x.to_le_bytes());
    }
    (body, n)
}

/// Median nanoseconds per call of `f` over 7 runs of `iters` calls.
fn time(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn main() {
    let spec = spec();
    println!("| rows | client | wire | router µs | worker µs | total µs | body bytes |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for rows in [1usize, 64] {
        let iters = if rows == 1 { 20_000 } else { 1_000 };
        let json = json_body(rows);
        let (binary, n) = binary_body(rows, &values(rows));

        // JSON client, forwarded as it came.
        let router = time(iters, || {
            black_box(validate_request(black_box(&json), None, &spec)).unwrap();
        });
        let worker = time(iters, || {
            black_box(decode_request(black_box(&json), None, &spec)).unwrap();
        });
        row(rows, "json", "as sent", router, worker, json.len());

        // JSON client, converted to binary at the router.
        let router = time(iters, || {
            let batch = decode_infer(black_box(&json), &spec).unwrap();
            black_box(binary_body(batch.rows, &batch.data));
        });
        let worker = time(iters, || {
            black_box(decode_request(black_box(&binary), Some(n), &spec)).unwrap();
        });
        row(rows, "json", "binary", router, worker, binary.len());

        // Binary client: as sent is already binary.
        let router = time(iters, || {
            black_box(validate_request(black_box(&binary), Some(n), &spec)).unwrap();
        });
        row(rows, "binary", "as sent", router, worker, binary.len());
    }
}

fn row(rows: usize, client: &str, wire: &str, router: f64, worker: f64, bytes: usize) {
    println!(
        "| {rows} | {client} | {wire} | {:.2} | {:.2} | {:.2} | {bytes} |",
        router / 1e3,
        worker / 1e3,
        (router + worker) / 1e3
    );
}
