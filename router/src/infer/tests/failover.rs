//! Forwarding: which members are tried in which order, when failover stops, the retry
//! budget and the deadline.

use std::time::Duration;

use http::StatusCode;

use super::{Call, FakeUpstream, Reply, World, call};
use crate::budget::RetryBudget;
use crate::error::RouterError;

#[tokio::test]
async fn failover_tries_resident_active_members_first_then_non_resident_then_draining_and_previous()
{
    // w1: resident, active; w2: active, not resident; w3: resident, draining;
    // w4: resident, a previous member. Every one answers 503, so every one is tried.
    for _ in 0..20 {
        let state = World::new()
            .worker("w1", true)
            .worker("w2", false)
            .worker("w3", true)
            .worker("w4", true)
            .draining("w3")
            .assign(&["w3", "w2", "w1"], &["w4"])
            .state(FakeUpstream::new(&[
                ("w1", Reply::Status(503)),
                ("w2", Reply::Status(503)),
                ("w3", Reply::Status(503)),
                ("w4", Reply::Status(503)),
            ]));
        let relay = call(&state, Call::default()).await.unwrap();
        // The last retryable answer is passed on as the worker gave it.
        assert_eq!(relay.answer.status, StatusCode::SERVICE_UNAVAILABLE);
        let tried = state.upstream.workers();
        assert_eq!(tried[..2], ["w1", "w2"], "{tried:?}");
        // Draining and previous members share the last tier, in random order.
        let mut last = tried[2..].to_vec();
        last.sort();
        assert_eq!(last, ["w3", "w4"], "{tried:?}");
        assert_eq!(state.metrics.retries.get(), 3);
        assert_eq!(relay.worker.unwrap(), tried[3].as_str());
    }
}

#[tokio::test]
async fn a_final_answer_ends_failover_and_names_its_worker() {
    // Tried in this order: w1 (resident), w2 (not resident), w3 (draining).
    let state = World::new()
        .worker("w1", true)
        .worker("w2", false)
        .worker("w3", true)
        .draining("w3")
        .assign(&["w1", "w2", "w3"], &[])
        .state(FakeUpstream::new(&[
            ("w1", Reply::Refused),
            ("w2", Reply::Status(200)),
            ("w3", Reply::Status(200)),
        ]));
    let relay = call(&state, Call::default()).await.unwrap();
    assert_eq!(relay.answer.status, StatusCode::OK);
    assert_eq!(relay.worker.as_ref().unwrap(), "w2");
    let headers: Vec<_> = relay.headers().map(|(n, v)| (n, v.clone())).collect();
    assert!(headers.contains(&("x-shardline-worker", "w2".parse().unwrap())));
    let sent = state.upstream.sent();
    assert_eq!(
        sent.iter().map(|s| s.worker.as_str()).collect::<Vec<_>>(),
        ["w1", "w2"]
    );
    // What a worker receives: the tenant-qualified path, the public name, the
    // snapshot's revision and the client's bytes as they are.
    for s in &sent {
        assert_eq!(s.path, "/v2/models/acme.risk/versions/1/infer");
        assert_eq!(s.public_name, "risk");
        assert_eq!(s.revision, 42);
        assert_eq!(&s.body[..], super::VALID.as_bytes());
        assert!(s.timeout <= Duration::from_secs(1), "{:?}", s.timeout);
    }
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_every_member_answers_503() {
    // 20 % of original requests, no reserve: five requests earn one retry.
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .worker("w3", true)
        .worker("w4", true)
        .assign(&["w1", "w2", "w3", "w4"], &[])
        .budget(RetryBudget::new(200, 0, Duration::from_secs(60)))
        .state(FakeUpstream::new(&[
            ("w1", Reply::Status(503)),
            ("w2", Reply::Status(503)),
            ("w3", Reply::Status(503)),
            ("w4", Reply::Status(503)),
        ]));
    let requests = 5;
    for _ in 0..requests {
        let relay = call(&state, Call::default()).await.unwrap();
        assert_eq!(relay.answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let attempts = state.upstream.sent().len();
    assert_eq!(attempts, requests + 1, "{:?}", state.upstream.workers());
    assert_eq!(state.metrics.retries.get(), 1);
    // Every request wanted another member at least once and was refused.
    assert_eq!(state.metrics.retries_refused.get(), 5);
}

#[tokio::test]
async fn an_expired_deadline_answers_504() {
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .worker("w3", true)
        .assign(&["w1", "w2", "w3"], &[])
        .state(FakeUpstream::new(&[
            ("w1", Reply::Stall),
            ("w2", Reply::Stall),
            ("w3", Reply::Stall),
        ]));
    let refusal = call(
        &state,
        Call {
            deadline: Some("40"),
            ..Call::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        refusal,
        RouterError::DeadlineExceeded(Duration::from_millis(40))
    );
    assert_eq!(refusal.status(), StatusCode::GATEWAY_TIMEOUT);
    // The first attempt had the whole deadline; none was started after it expired.
    let sent = state.upstream.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].timeout <= Duration::from_millis(40), "{sent:?}");
}

#[tokio::test]
async fn a_timeout_cut_short_by_the_clients_deadline_does_not_eject_the_worker() {
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .assign(&["w1", "w2"], &[])
        .limits(|l| l.attempt_timeout = Duration::from_millis(200))
        .state(FakeUpstream::new(&[
            ("w1", Reply::Stall),
            ("w2", Reply::Stall),
        ]));
    // The client allows 40 ms, less than the router's 200 ms attempt timeout: the
    // worker that ran out of it is not at fault.
    let short = Call {
        deadline: Some("40"),
        ..Call::default()
    };
    let refusal = call(&state, short).await.unwrap_err();
    assert_eq!(refusal.status(), StatusCode::GATEWAY_TIMEOUT);
    let first = state.upstream.workers()[0].clone();
    let id = shardline_shared::ids::WorkerId::new(&first).unwrap();
    let now = std::time::Instant::now();
    assert!(!state.fleet.is_ejected(&state.fleet.get(&id), now));
    assert_eq!(state.metrics.client_deadline_timeouts.get(), 1);

    // With a deadline longer than the attempt timeout, the same stall is the worker's.
    let long = Call {
        deadline: Some("1000"),
        ..Call::default()
    };
    let _ = call(&state, long).await;
    let now = std::time::Instant::now();
    let tried = state.upstream.workers();
    let id = shardline_shared::ids::WorkerId::new(tried.last().unwrap()).unwrap();
    assert!(
        state.fleet.is_ejected(&state.fleet.get(&id), now),
        "{tried:?}"
    );
    assert_eq!(state.metrics.client_deadline_timeouts.get(), 1);
}

#[tokio::test]
async fn one_tenants_failures_do_not_spend_the_retries_of_the_others() {
    use crate::budget::TENANT_RETRY_RESERVE;
    // The router's budget: 20 % of requests plus a reserve of 50 retries. acme's shard
    // answers 503 everywhere, so every acme request wants three retries.
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .worker("w3", true)
        .worker("w4", true)
        .worker("g1", false)
        .worker("g2", false)
        .assign(&["w1", "w2", "w3", "w4"], &[])
        .put(
            "/shardline/assignments/globex/secret",
            serde_json::json!({"workers": ["g1", "g2"], "epoch": 1}),
        )
        .budget(RetryBudget::new(200, 5, Duration::from_secs(10)))
        .state(FakeUpstream::new(&[
            ("w1", Reply::Status(503)),
            ("w2", Reply::Status(503)),
            ("w3", Reply::Status(503)),
            ("w4", Reply::Status(503)),
            ("g1", Reply::Status(503)),
            ("g2", Reply::Status(503)),
        ]));
    let requests = 100u64;
    for _ in 0..requests {
        call(&state, Call::default()).await.unwrap();
    }
    let acme_retries = state.metrics.retries.get();
    let share = u64::from(TENANT_RETRY_RESERVE) + requests * 200 / 1000;
    assert!(
        acme_retries <= share,
        "acme retried {acme_retries} times, its share is {share}"
    );
    // The router's budget still has retries for globex: its request fails over.
    let globex = Call {
        name: "secret",
        authorization: Some("Bearer globex-key"),
        ..Call::default()
    };
    call(&state, globex).await.unwrap();
    let to_globex = state
        .upstream
        .workers()
        .iter()
        .filter(|w| w.starts_with('g'))
        .count();
    assert_eq!(to_globex, 2, "globex's request was not allowed its retry");
}

#[tokio::test]
async fn running_out_of_descriptors_is_not_held_against_the_worker() {
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .assign(&["w1", "w2"], &[])
        .state(FakeUpstream::new(&[
            ("w1", Reply::Exhausted),
            ("w2", Reply::Exhausted),
        ]));
    let refused = call(&state, Call::default()).await.unwrap_err();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // One attempt, no retry spent, and neither worker ejected.
    assert_eq!(state.upstream.sent().len(), 1);
    assert_eq!(state.metrics.retries.get(), 0);
    let now = std::time::Instant::now();
    for w in ["w1", "w2"] {
        let health = state.fleet.get(&w.parse().unwrap());
        assert!(!state.fleet.is_ejected(&health, now), "{w} ejected");
    }
}
