//! Hostile clients against memory, on real router and worker processes (the rest of the
//! hostile suite is `hostile.rs`): the parameters bomb — bodies of `--max-body` made of
//! `{"":0}` objects, at the tenant's max in-flight — keeps both processes' resident sets
//! (read from /proc) within a few bodies' worth; and the router's in-flight byte budget
//! answers 503 past it and gets its bytes back when clients go away mid-body.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shardline_shared::ids::ModelKey;
use shardline_shared::records::TenantLimits;
use shardline_testkit::eventually;
use shardline_testkit::fleet::{Node, TestFleet, infer_body, rows};
use shardline_testkit::hostile::{Memory, exchange, hold, parameters_bomb};

const PATH: &str = "/v2/models/risk/infer";
const MAX_BODY: usize = 1 << 20;
/// The tenant's limit on requests in flight on one router, and the bombs sent at once.
const MAX_IN_FLIGHT: u32 = 8;

/// One worker with tenant `acme` (at most [`MAX_IN_FLIGHT`] requests in flight) and its
/// model `risk` placed on it; its key. Each test starts its own router with [`router`].
async fn fleet() -> (TestFleet, String) {
    let mut fleet = TestFleet::builder().workers(1).routers(0).start().await;
    fleet.add_router().await;
    let limits = TenantLimits {
        max_in_flight: MAX_IN_FLIGHT,
        rate_per_sec: 0,
    };
    let key = fleet.tenant_with("acme", Some(1), limits).await;
    fleet.publish("acme", "risk", "1", 5).await;
    let shard = ModelKey::parse_shard_key("acme/risk").unwrap();
    fleet
        .wait_assignment(&shard, Duration::from_secs(10), |a| a.workers.len() == 1)
        .await;
    fleet.routers.clear();
    (fleet, key)
}

/// A router process with bodies up to [`MAX_BODY`] and `inflight` of them at once.
async fn router(fleet: &TestFleet, inflight: usize, extra: &[(&str, &str)]) -> Node {
    let mut spec = fleet
        .router_spec("r-memory")
        .set("--max-body", MAX_BODY.to_string())
        .set("--max-inflight-bytes", inflight.to_string());
    for (flag, value) in extra {
        spec = spec.set(flag, *value);
    }
    fleet.start_node(spec).await
}

/// `inputs` and the closing brace of a valid request for `risk`.
fn inputs() -> String {
    let body = infer_body(&rows(2, 3)).to_string();
    body[body.find(r#""inputs""#).unwrap()..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameters_bomb_at_max_body_and_max_in_flight_stays_within_memory_budgets() {
    let (fleet, key) = fleet().await;
    let in_flight = MAX_IN_FLIGHT as usize * MAX_BODY;
    let node = router(&fleet, in_flight, &[]).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = node.endpoint(PATH);
    let plain = infer_body(&rows(2, 3)).to_string();
    let warm = http.post(&url).bearer_auth(&key).body(plain).send().await;
    assert_eq!(warm.unwrap().status(), 200);
    let pids = [node.pid().unwrap(), fleet.workers[0].pid().unwrap()];
    let before = pids.map(|pid| Memory::of(pid).unwrap());

    let bomb = bytes::Bytes::from(parameters_bomb(MAX_BODY, &inputs()));
    for _round in 0..3 {
        let sent = (0..MAX_IN_FLIGHT).map(|_| {
            let send = http.post(&url).bearer_auth(&key).body(bomb.clone()).send();
            async move { send.await.unwrap().status().as_u16() }
        });
        let statuses = futures::future::join_all(sent).await;
        assert_eq!(statuses, vec![200; MAX_IN_FLIGHT as usize]);
    }

    // The budget: the bodies in flight held a few times over (read, forwarded, read
    // again by the worker, buffers growing by doubling) plus 32 MiB of slack. Parsed
    // into maps they cost ~85 bytes per body byte, 680 MiB here.
    let budget = 4 * in_flight as u64 + (32 << 20);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let grew = ["router", "worker"].map(|name| {
        let i = usize::from(name == "worker");
        let after = Memory::of(pids[i]).unwrap();
        let grew = after.peak.saturating_sub(before[i].rss);
        eprintln!(
            "{name}: resident {:.1} MiB before, peak {:.1} MiB after: +{:.1} MiB (budget {:.1} MiB)",
            mib(before[i].rss),
            mib(after.peak),
            mib(grew),
            mib(budget)
        );
        grew
    });
    assert!(grew.iter().all(|&g| g <= budget), "grew by {grew:?} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_routers_inflight_budget_get_503_until_clients_let_go() {
    let (fleet, key) = fleet().await;
    // Room for four bodies of --max-body; the bodies come slowly, not too slowly.
    let node = router(&fleet, 4 * MAX_BODY, &[("--body-timeout", "60s")]).await;
    let target = node.addr.to_string();
    let head = |len: usize, extra: &str| {
        format!(
            "POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n{extra}content-length: {len}\r\n\r\n"
        )
    };
    // Four clients announce the largest body and send a little of it.
    let mut first = head(MAX_BODY, "").into_bytes();
    first.extend_from_slice(&[b' '; 1000]);
    let held = hold(&target, 4, &first).await;
    let reserved = "shardline_router_inflight_body_bytes";
    eventually!(Duration::from_secs(10), "four bodies reserved", {
        node.metric(reserved).await == (4 * MAX_BODY) as f64
    });

    // A fifth request does not fit, however small its body, on the fast path and on
    // hyper's (chunked: it may grow to --max-body): 503 with Retry-After, never
    // forwarded.
    let forwarded = node
        .metric("shardline_router_upstream_requests_total")
        .await;
    let body = infer_body(&rows(2, 3)).to_string();
    let mut fast = head(body.len(), "").into_bytes();
    fast.extend_from_slice(body.as_bytes());
    let chunked = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    for request in [fast.as_slice(), chunked.as_bytes()] {
        let got = exchange(&target, request, Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&got.bytes).to_lowercase();
        assert_eq!(got.statuses(), vec![503], "{text}");
        assert!(text.contains("retry-after: 1"), "{text}");
        assert!(text.contains("request bodies in flight"), "{text}");
    }
    assert_eq!(
        node.metric("shardline_router_inflight_bytes_refused_total")
            .await,
        2.0
    );
    assert_eq!(
        node.metric("shardline_router_upstream_requests_total")
            .await,
        forwarded
    );

    // The clients go away mid-body: every byte comes back, and requests are served.
    drop(held);
    eventually!(Duration::from_secs(10), "reserved bytes given back", {
        node.metric(reserved).await == 0.0
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = http
        .post(node.endpoint(PATH))
        .bearer_auth(&key)
        .body(body)
        .send()
        .await;
    assert_eq!(ok.unwrap().status(), 200);
}
