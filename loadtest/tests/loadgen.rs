//! The load generator against a deliberately slow server on 127.0.0.1: it answers each
//! infer request after a fixed service time and serves at most a few at once, so its
//! capacity is known. Open loop above that capacity must report the queueing (latency from
//! each request's intended send time), closed loop and open loop below capacity the service
//! time. Bounds derive from the configuration, with slack for a loaded 2-core machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shardline_loadtest::loadgen::{self, Mix, Mode, Options, Report, TenantKey};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The server's time per request.
const SERVICE: Duration = Duration::from_millis(50);
/// Requests it serves at once.
const SLOTS: usize = 2;
/// Features per row its metadata announces (not the generator's default of 64).
const FEATURES: usize = 8;
/// Allowance for scheduling delays on a busy machine, on top of the service time.
const SLACK: Duration = Duration::from_millis(150);

/// Requests per second the server can answer.
fn capacity() -> f64 {
    SLOTS as f64 / SERVICE.as_secs_f64()
}

/// An OIP-ish server: `GET /v2/models/{m}` announces `FEATURES` inputs; `POST
/// /v2/models/{m}/infer` answers 401 for the key `bad`, 400 when the input's shape or data
/// do not match `FEATURES`, else 200 after `SERVICE`, at most `SLOTS` at a time.
struct SlowServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowServer {
    async fn start() -> Self {
        let slots = Arc::new(Semaphore::new(SLOTS));
        let app = axum::Router::new()
            .route("/v2/models/{model}", get(metadata))
            .route("/v2/models/{model}/infer", post(infer))
            .with_state(slots);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn metadata() -> Json<Value> {
    Json(json!({
        "name": "risk", "versions": ["1"], "platform": "test",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }))
}

async fn infer(
    State(slots): State<Arc<Semaphore>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer bad") {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad key"})));
    }
    let input = &body["inputs"][0];
    let rows = input["shape"][0].as_u64().unwrap_or(0) as usize;
    let shape_ok = input["name"] == "x"
        && input["shape"][1] == FEATURES
        && input["data"].as_array().map(Vec::len) == Some(rows * FEATURES);
    if !shape_ok {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "bad shape"})));
    }
    let _slot = slots.acquire().await.expect("semaphore open");
    tokio::time::sleep(SERVICE).await;
    (StatusCode::OK, Json(json!({"outputs": []})))
}

fn tenant(name: &str, key: &str) -> TenantKey {
    TenantKey {
        tenant: name.to_owned(),
        key: key.to_owned(),
        models: vec!["risk".to_owned()],
    }
}

fn options(router: String, tenants: Vec<TenantKey>, mode: Mode, duration: Duration) -> Options {
    let mut o = Options::new(router, tenants, mode);
    o.duration = duration;
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn describe(r: &Report) -> String {
    r.table()
}

/// How many requests an open-loop run schedules.
fn scheduled(rate: f64, duration: Duration) -> u64 {
    loadgen::plan::Schedule::new(rate, duration)
        .expect("valid rate")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_above_capacity_reports_the_queueing_delay() {
    let server = SlowServer::start().await;
    let rate = 2.5 * capacity(); // 100 req/s against 40 req/s
    let duration = Duration::from_secs(2);
    let connections = 2 * SLOTS;
    let mut o = options(
        server.url(),
        vec![tenant("t1", "k1"), tenant("t2", "k2")],
        Mode::Open { rate, connections },
        duration,
    );
    o.batch = 3;
    let r = loadgen::run(&o).await.expect("run");
    eprintln!("{}", r.table());
    let n = scheduled(rate, duration);
    assert_eq!((r.requests, r.ok), (n, n), "{}", describe(&r));
    assert_eq!(r.setup.features, FEATURES, "features from the metadata");
    assert!(r.connections <= connections as u64);

    // The server finishes request i no earlier than (i / capacity) after the start, but it
    // was due at i / rate: its wait grows by (1/capacity − 1/rate) per request. A client
    // that measured from the actual send would see at most connections / SLOTS service
    // times (≤ 100 ms) instead.
    let expected = |q: f64| -> Duration {
        let i = q * n as f64;
        SERVICE + Duration::from_secs_f64(i * (1.0 / capacity() - 1.0 / rate))
    };
    let (p50, p99) = (r.latency.p50, r.latency.p99);
    assert!(
        p50 >= expected(0.5).mul_f64(0.8),
        "p50 {:.0} ms, expected ≈ {:.0} ms\n{}",
        ms(p50),
        ms(expected(0.5)),
        describe(&r)
    );
    assert!(
        p99 >= expected(0.99).mul_f64(0.8),
        "p99 {:.0} ms, expected ≈ {:.0} ms\n{}",
        ms(p99),
        ms(expected(0.99)),
        describe(&r)
    );
    assert!(p99 > SERVICE * 10, "p99 far above the service time");
    // The run drains the backlog: it lasts at least n / capacity, and the server never
    // answers faster than its capacity.
    assert!(r.elapsed.as_secs_f64() >= n as f64 / capacity() * 0.95);
    assert!(r.throughput() <= capacity() * 1.05, "{}", describe(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_the_same_server_reports_the_service_time() {
    let server = SlowServer::start().await;
    let o = options(
        server.url(),
        vec![tenant("t1", "k1")],
        Mode::Closed { concurrency: SLOTS },
        Duration::from_millis(1500),
    );
    let r = loadgen::run(&o).await.expect("run");
    eprintln!("{}", r.table());
    assert_eq!(r.error_count(), 0, "{}", describe(&r));
    let p50 = r.latency.p50;
    assert!(
        p50 >= SERVICE && p50 <= SERVICE + SLACK,
        "p50 {:.0} ms\n{}",
        ms(p50),
        describe(&r)
    );
    // Never more than SLOTS in flight, so no queue: at worst one slow scheduling hiccup.
    assert!(r.latency.p99 <= SERVICE + 3 * SLACK, "{}", describe(&r));
    assert!(r.throughput() <= capacity() * 1.05, "{}", describe(&r));
    assert!(r.throughput() >= capacity() * 0.4, "{}", describe(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_below_capacity_reports_the_service_time() {
    let server = SlowServer::start().await;
    let rate = capacity() / 4.0; // 10 req/s against 40 req/s
    let duration = Duration::from_secs(2);
    let o = options(
        server.url(),
        vec![tenant("t1", "k1")],
        Mode::Open {
            rate,
            connections: 2 * SLOTS,
        },
        duration,
    );
    let r = loadgen::run(&o).await.expect("run");
    eprintln!("{}", r.table());
    let n = scheduled(rate, duration);
    assert_eq!((r.requests, r.ok), (n, n), "{}", describe(&r));
    let p50 = r.latency.p50;
    assert!(
        p50 >= SERVICE && p50 <= SERVICE + SLACK,
        "p50 {:.0} ms\n{}",
        ms(p50),
        describe(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_not_fatal() {
    let server = SlowServer::start().await;
    let rate = 40.0;
    let duration = Duration::from_millis(500);
    let n = scheduled(rate, duration);
    let mode = Mode::Open {
        rate,
        connections: 4,
    };

    // Half the keys are refused with 401.
    let mut o = options(
        server.url(),
        vec![tenant("good", "k1"), tenant("bad", "bad")],
        mode,
        duration,
    );
    o.mix = Mix::Uniform;
    let r = loadgen::run(&o).await.expect("run");
    eprintln!("{}", r.table());
    let refused = r.errors.get("401").copied().unwrap_or(0);
    assert_eq!(r.requests, n);
    assert!(r.ok > 0 && refused > 0, "{}", describe(&r));
    assert_eq!(r.ok + refused, n, "{}", describe(&r));
    let bad = r
        .busiest
        .iter()
        .find(|t| t.tenant == "bad")
        .expect("bad seen");
    assert_eq!((bad.requests, bad.ok), (refused, 0));

    // Nothing listens: every request is a connection error; the metadata falls back.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    for mode in [mode, Mode::Closed { concurrency: 2 }] {
        let r = loadgen::run(&options(
            dead.clone(),
            vec![tenant("t", "k")],
            mode,
            duration,
        ))
        .await
        .expect("run");
        assert!(r.requests > 0, "{}", describe(&r));
        assert_eq!(
            r.errors.get("connect"),
            Some(&r.requests),
            "{}",
            describe(&r)
        );
        assert_eq!(r.ok, 0);
        assert_eq!(r.setup.features, loadgen::DEFAULT_FEATURES);
        assert!(r.setup.metadata_error.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_json_and_refuses_a_bad_keys_file_with_exit_64() {
    let server = SlowServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        r#"[{"tenant": "t1", "key": "k1", "models": ["risk"]}]"#,
    )
    .expect("write keys");
    let url = server.url();
    let run = |keys: &std::path::Path| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"));
        cmd.args(["run", "--router", &url, "--keys"])
            .arg(keys)
            .args(["--rate", "20", "--duration", "500ms", "--json"]);
        async move { cmd.output().await }
    };
    let out = run(&keys).await.expect("loadtest runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["mode"], "open-loop");
    assert_eq!(report["ok"], 10);
    assert_eq!(report["features"], FEATURES);
    assert!(report["latency_ms"]["p99_9"].as_f64().is_some());

    let malformed = dir.path().join("malformed.json");
    std::fs::write(&malformed, r#"{"tenant": "t1"}"#).expect("write");
    for (path, needle) in [
        (dir.path().join("missing.json"), "cannot read keys file"),
        (malformed, "is malformed"),
    ] {
        let out = run(&path).await.expect("loadtest runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}
