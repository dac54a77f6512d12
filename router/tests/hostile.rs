//! Hostile clients against real router and worker processes (`shardline_testkit::hostile`):
//! thousands of connections holding partial heads or idling while a legitimate client
//! keeps scoring, with the router under a low descriptor limit; a client that never
//! reads; a trickled body; request smuggling probes; unauthenticated large bodies; a
//! request stuck at shutdown. Timeouts are a second or two here, so the suite runs in
//! seconds.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shardline_testkit::fleet::{Node, TestFleet, infer_body, rows};
use shardline_testkit::hostile::{
    PARTIAL_HEAD, SMUGGLING_PROBES, exchange, hold, never_read, open_descriptors, probe, trickle,
};

const PATH: &str = "/v2/models/risk/infer";

/// Short limits for every router and worker of these tests.
const LIMITS: [(&str, &str); 5] = [
    ("--header-timeout", "1s"),
    ("--idle-timeout", "1s"),
    ("--body-timeout", "1s"),
    ("--body-min-rate", "1KiB"),
    ("--write-timeout", "1s"),
];

/// One worker with tenant `acme`'s model `risk` placed on it (its key returned), and no
/// router: each test starts its own with [`router`].
async fn fleet() -> (TestFleet, String) {
    let mut builder = TestFleet::builder().workers(1).routers(0);
    for (flag, value) in LIMITS {
        builder = builder.worker_arg(&format!("{flag}={value}"));
    }
    let mut fleet = builder.start().await;
    fleet.add_router().await;
    let key = fleet.placed_model("acme", "risk", 1, 5).await;
    fleet.routers.clear();
    (fleet, key)
}

/// A router process with the short limits, `extra` flags and `nofile` descriptors at
/// most.
async fn router(fleet: &TestFleet, extra: &[(&str, &str)], nofile: Option<u64>) -> Node {
    let mut spec = fleet.router_spec("r-hostile");
    for (flag, value) in LIMITS.iter().chain(extra) {
        spec = spec.set(flag, *value);
    }
    if let Some(n) = nofile {
        spec = spec.nofile(n);
    }
    fleet.start_node(spec).await
}

fn addr(node: &Node) -> String {
    node.addr.to_string()
}

fn body() -> String {
    infer_body(&rows(2, 3)).to_string()
}

/// `POST` of an inference with `key` (no key when empty), announcing `len` body bytes.
fn head(key: &str, len: usize, extra: &str) -> Vec<u8> {
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("authorization: Bearer {key}\r\n")
    };
    format!("POST {PATH} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_are_closed_and_never_starve_a_scoring_client() {
    let (fleet, key) = fleet().await;
    // 1,024 descriptors: the limit on client connections is lowered to fit them (a
    // connection to a worker reserved for each), so the router can always reach its
    // workers however many connections clients try to hold.
    const NOFILE: u64 = 1024;
    let node = router(&fleet, &[], Some(NOFILE)).await;
    let max = node.metric("shardline_connections_max").await;
    assert!(
        (1.0..=((NOFILE - 128) / 2) as f64).contains(&max),
        "limit {max}"
    );
    let pid = node.pid().unwrap();

    // A legitimate client scores all along on its keep-alive connection.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = node.endpoint(PATH);
    let payload = body();
    let ok = client
        .post(&url)
        .bearer_auth(&key)
        .body(payload.clone())
        .send()
        .await;
    assert_eq!(ok.unwrap().status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let (scored, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let scorer = tokio::spawn({
        let (stop, scored, failed) = (stop.clone(), scored.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .post(&url)
                    .bearer_auth(&key)
                    .body(payload.clone())
                    .send();
                match sent.await {
                    Ok(r) if r.status() == 200 => scored.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("legitimate request failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }
    });
    // Descriptors, sampled while under attack.
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let (stop, most) = (stop.clone(), most.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(n) = open_descriptors(pid) {
                    most.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let target = addr(&node);
    // 5,000 connections that send part of a head and nothing more (the first ones fill
    // the limit and are closed by the header timeout, the rest are refused at once),
    // then 1,000 that make one (unauthenticated, bodiless) request and idle.
    let partial = hold(&target, 5000, PARTIAL_HEAD).await;
    let idle_request = head("", 0, "");
    let idle = hold(&target, 1000, &idle_request).await;
    let attacked = Instant::now();
    let (idle_closed, partial_closed) = tokio::join!(
        idle.wait_closed(Duration::from_secs(15)),
        partial.wait_closed(Duration::from_secs(15)),
    );
    let took = attacked.elapsed();
    // Keep scoring a little after the last held connection went.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    scorer.await.unwrap();
    sampler.await.unwrap();

    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "legitimate requests failed"
    );
    assert!(
        scored.load(Ordering::Relaxed) > 10,
        "the client kept scoring"
    );
    assert_eq!(idle.refused + partial.refused, 0, "connects were refused");
    assert_eq!(
        (idle_closed, partial_closed),
        (1000, 5000),
        "held connections left open"
    );
    assert!(took < Duration::from_secs(10), "closing them took {took:?}");
    let most = most.load(Ordering::Relaxed) as u64;
    assert!(most < NOFILE, "descriptors reached {most} of {NOFILE}");
    let closed = |reason: &str| {
        let node = &node;
        let reason = reason.to_owned();
        async move {
            node.metric(&format!(
                "shardline_connections_closed_total{{reason=\"{reason}\"}}"
            ))
            .await
        }
    };
    assert!(closed("header_timeout").await > 0.0);
    assert!(node.metric("shardline_connections_refused_total").await > 0.0);
    assert_eq!(
        node.metric("shardline_router_upstream_requests_total{result=\"router_exhausted\"}")
            .await,
        0.0
    );
    eprintln!(
        "limit {max}, at most {most} descriptors, held connections closed in {took:?}, {} scored",
        scored.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_partial_connections_to_a_worker_are_closed() {
    let (fleet, _key) = fleet().await;
    let target = addr(&fleet.workers[0]);
    let partial = hold(&target, 200, PARTIAL_HEAD).await;
    let idle = hold(
        &target,
        200,
        b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(partial.wait_closed(Duration::from_secs(5)).await, 200);
    assert_eq!(idle.wait_closed(Duration::from_secs(5)).await, 200);
    assert!(
        fleet.workers[0]
            .metric("shardline_connections_closed_total{reason=\"header_timeout\"}")
            .await
            >= 200.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let (fleet, _key) = fleet().await;
    let node = router(&fleet, &[], None).await;
    // Pipelined requests answered with 401 (no body: the connection stays open), never
    // read: the router's writes block, and it gives up after --write-timeout.
    let broke = never_read(&addr(&node), &head("", 0, ""), Duration::from_secs(30)).await;
    let broke = broke.expect("the connection was never dropped");
    assert!(broke < Duration::from_secs(20), "dropped after {broke:?}");
    assert!(
        node.metric("shardline_connections_closed_total{reason=\"write_timeout\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_with_408() {
    let (fleet, key) = fleet().await;
    let node = router(&fleet, &[], None).await;
    let payload = vec![b' '; 4096];
    // 8 bytes every 100 ms is 80 B/s, far under the 1 KiB/s minimum: on the fast path,
    // through hyper (a chunked body), and at the worker itself.
    let fast = head(&key, payload.len(), "");
    let chunked = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n1000\r\n"
    );
    let to_worker = format!(
        "POST /v2/models/acme.risk/infer HTTP/1.1\r\nhost: x\r\nx-shardline-token: {}\r\ncontent-length: {}\r\n\r\n",
        shardline_testkit::TOKEN,
        payload.len()
    );
    for (target, start) in [
        (addr(&node), fast.as_slice()),
        (addr(&node), chunked.as_bytes()),
        (addr(&fleet.workers[0]), to_worker.as_bytes()),
    ] {
        let (answer, took) = trickle(&target, start, &payload, Duration::from_millis(100)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    }
    assert!(
        node.metric("shardline_connections_closed_total{reason=\"body_timeout\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_get_one_answer_or_400_and_never_a_second_forward() {
    let (fleet, key) = fleet().await;
    let node = router(&fleet, &[], None).await;
    let payload = body();
    let forwarded = || node.metric("shardline_router_upstream_requests_total");
    for (name, template) in SMUGGLING_PROBES {
        let before = forwarded().await;
        let bytes = probe(template, PATH, &key, &payload);
        let got = exchange(&addr(&node), &bytes, Duration::from_millis(1500)).await;
        let statuses = got.statuses();
        let after = forwarded().await;
        eprintln!(
            "{name}: {statuses:?}, closed {}, forwarded {}",
            got.closed,
            after - before
        );
        assert!(
            statuses.len() == 1 || statuses.first() == Some(&400),
            "{name}: answers {statuses:?}:\n{}",
            String::from_utf8_lossy(&got.bytes)
        );
        assert!(
            after - before <= 1.0,
            "{name}: forwarded {} times",
            after - before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_large_bodies_are_refused_before_they_are_read() {
    let (fleet, _key) = fleet().await;
    let node = router(&fleet, &[("--max-body", "64MiB")], None).await;
    let target = addr(&node);
    // The head alone is answered, on the fast path and on hyper's (chunked), and the
    // connection closed: the body is never waited for.
    for bytes in [
        head("wrong", 64 << 20, ""),
        head("", 64 << 20, ""),
        format!("POST {PATH} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            .into_bytes(),
    ] {
        let got = exchange(&target, &bytes, Duration::from_secs(5)).await;
        assert_eq!(
            got.statuses(),
            vec![401],
            "{}",
            String::from_utf8_lossy(&got.bytes)
        );
        assert!(got.closed, "the connection stayed open");
    }
    // A client that sends its 64 MiB body regardless gets the 401 and cannot push the
    // body through: the router does not read it.
    let mut conn = tokio::net::TcpStream::connect(&target).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(&head("wrong", 64 << 20, "")).await.unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let pushing = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match tokio::time::timeout(Duration::from_secs(5), writer.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 401"));
    let sent = pushing.await.unwrap();
    assert!(sent < 32 << 20, "the router took {sent} bytes of the body");
    assert!(
        node.metric("shardline_connections_closed_total{reason=\"body_unread\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_a_stuck_request_after_the_grace_period() {
    let (fleet, key) = fleet().await;
    let mut node = router(
        &fleet,
        &[
            ("--body-timeout", "60s"),
            ("--header-timeout", "60s"),
            ("--shutdown-grace", "1s"),
        ],
        None,
    )
    .await;
    let target = addr(&node);
    // One connection stuck mid-body, one mid-head (hyper's: chunked).
    let stuck = hold(&target, 1, &head(&key, 1000, "")).await;
    let chunked = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n10\r\n"
    );
    let stuck_hyper = hold(&target, 1, chunked.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    shardline_testkit::send_signal(node.pid().unwrap(), "TERM").unwrap();
    while node.is_running() && stopped.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopped.elapsed();
    assert!(!node.is_running(), "the router still runs after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}: before the grace period"
    );
    assert_eq!(stuck.closed() + stuck_hyper.closed(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_holds_a_bounded_number_of_connections() {
    let (fleet, _key) = fleet().await;
    let node = router(&fleet, &[], None).await;
    let metrics = node
        .metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    // 100 clients that never finish a head: 64 are held (until the 10 s header
    // timeout), the rest are closed at once.
    let held = hold(&metrics, 100, PARTIAL_HEAD).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(held.closed(), 36);
    drop(held);
    // Once they are gone, scraping works.
    shardline_testkit::eventually!(Duration::from_secs(10), "a scrape after the flood", {
        node.metric("shardline_connections_max").await > 0.0
    });
}
