//! The router's own answers: every refusal of the inference path with its status, and
//! none of them ever reaching a worker.

use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, StatusCode};

use super::{Call, FakeUpstream, Reply, VALID, World, call};
use crate::error::RouterError;
use crate::infer::{InferRequest, KeyMemo, handle, read_body};

/// `acme`'s request for `risk`, without its body.
fn request() -> InferRequest<'static> {
    InferRequest {
        name: "risk",
        version: None,
        chosen: None,
        authorization: Some(b"Bearer acme-key"),
        deadline: None,
        header_length: None,
        route_key: None,
        content_length: None,
    }
}

/// A world where `acme/risk` is served by one resident worker answering 200.
fn served() -> World {
    World::new().worker("w1", true).assign(&["w1"], &[])
}

fn ok() -> FakeUpstream {
    FakeUpstream::new(&[("w1", Reply::Status(200))])
}

#[tokio::test]
async fn requests_without_a_valid_bearer_key_get_401() {
    let state = served().state(ok());
    for authorization in [
        None,
        Some("Bearer wrong-key"),
        Some("Basic acme-key"),
        Some("acme-key"),
        Some("Bearer"),
    ] {
        let refusal = call(
            &state,
            Call {
                authorization,
                ..Call::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refusal, RouterError::Unauthorized, "{authorization:?}");
        assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(state.upstream.sent(), []);
    // The right key in any case of the scheme is served.
    let relay = call(
        &state,
        Call {
            authorization: Some("bearer acme-key"),
            ..Call::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(relay.answer.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_models_other_tenants_models_and_unknown_versions_get_404() {
    let state = served().state(ok());
    let not_found = |name: &str| RouterError::NotFound(format!("model {name:?} not found"));
    for name in ["nothere", "no.such", "../risk"] {
        let refusal = call(
            &state,
            Call {
                name,
                ..Call::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refusal, not_found(name));
        assert_eq!(refusal.status(), StatusCode::NOT_FOUND);
    }
    // globex's model, asked for with acme's key: exactly a missing model's answer.
    let globex = Call {
        name: "secret",
        ..Call::default()
    };
    assert_eq!(call(&state, globex).await.unwrap_err(), not_found("secret"));
    let nobody_has_it = served().without("/shardline/models/globex/").state(ok());
    assert_eq!(
        call(&state, globex).await.unwrap_err(),
        call(&nobody_has_it, globex).await.unwrap_err()
    );
    // globex itself is served its model.
    let own = Call {
        authorization: Some("Bearer globex-key"),
        ..globex
    };
    assert_eq!(
        call(&state, own).await.unwrap().answer.status,
        StatusCode::OK
    );
    assert_eq!(state.upstream.workers(), ["w1"]);
    for version in ["2", "x/y", ""] {
        let refusal = call(
            &state,
            Call {
                version: Some(version),
                ..Call::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            refusal,
            RouterError::NotFound(format!("model \"risk\" has no version {version:?}"))
        );
    }
    assert_eq!(state.upstream.workers(), ["w1"]);
    // The version that exists is served.
    let relay = call(
        &state,
        Call {
            version: Some("1"),
            ..Call::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(relay.answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let state = served().limits(|l| l.max_body = 100).state(ok());
    let over = format!("{{\"inputs\":[],\"pad\":\"{}\"}}", "x".repeat(100));
    // Refused on its declared length, or while reading when it declares none.
    for declared in [true, false] {
        let mut headers = HeaderMap::new();
        if declared {
            headers.insert("content-length", over.len().into());
        }
        let body = read_body(&headers, Body::from(over.clone()), state.limits.max_body);
        let refusal = handle(&state, request(), body, &mut KeyMemo::default())
            .await
            .unwrap_err();
        assert_eq!(refusal, RouterError::TooLarge(100), "declared: {declared}");
        assert_eq!(refusal.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(state.upstream.sent(), []);
    // Within the limit, the same reader's body is forwarded.
    let headers = HeaderMap::new();
    let body = read_body(&headers, Body::from(VALID), state.limits.max_body);
    let relay = handle(&state, request(), body, &mut KeyMemo::default())
        .await
        .unwrap();
    assert_eq!(relay.answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_over_its_in_flight_limit_gets_429() {
    let state = served()
        .tenant("acme", "acme-key", 1, 0)
        .state(FakeUpstream::new(&[("w1", Reply::Hang)]));
    // The first request is admitted and waits on its worker.
    let mut first = pin!(call(&state, Call::default()));
    assert!(futures::poll!(first.as_mut()).is_pending());
    assert_eq!(state.upstream.sent().len(), 1);
    let second = tokio::time::timeout(Duration::from_secs(5), call(&state, Call::default()));
    let refusal = second.await.expect("refused at once").unwrap_err();
    assert!(
        matches!(&refusal, RouterError::TooManyRequests { retry_after, .. }
            if *retry_after == Duration::from_secs(1)),
        "{refusal:?}"
    );
    assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        state
            .metrics
            .tenant_limited
            .with_label_values(&["in_flight"])
            .get(),
        1
    );
    // The refused request never reached a worker.
    assert_eq!(state.upstream.sent().len(), 1);
}

#[tokio::test]
async fn a_tenant_over_its_rate_limit_gets_429() {
    let state = served().tenant("acme", "acme-key", 0, 2).state(ok());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(match call(&state, Call::default()).await {
            Ok(relay) => relay.answer.status,
            Err(e) => e.status(),
        });
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(state.upstream.sent().len(), 2);
    assert_eq!(
        state
            .metrics
            .tenant_limited
            .with_label_values(&["rate"])
            .get(),
        2
    );
}

#[tokio::test]
async fn no_live_member_gets_503() {
    // The shard's members have no worker record: their leases are gone.
    let state = World::new()
        .worker("w9", true)
        .assign(&["gone1", "gone2"], &["gone3"])
        .state(ok());
    let refusal = call(&state, Call::default()).await.unwrap_err();
    assert_eq!(
        refusal,
        RouterError::Unavailable("no live worker serves model \"risk\"".into())
    );
    assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(state.upstream.sent(), []);
}

#[tokio::test]
async fn every_member_failing_gets_503() {
    let state = World::new()
        .worker("w1", true)
        .worker("w2", true)
        .worker("w3", false)
        .assign(&["w1", "w2", "w3"], &[])
        .state(FakeUpstream::new(&[
            ("w1", Reply::Refused),
            ("w2", Reply::Refused),
            ("w3", Reply::Refused),
        ]));
    let refusal = call(&state, Call::default()).await.unwrap_err();
    assert_eq!(
        refusal,
        RouterError::Unavailable(
            "no worker of model \"risk\"'s shard answered; try again shortly".into()
        )
    );
    assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
    let mut tried = state.upstream.workers();
    tried.sort();
    assert_eq!(tried, ["w1", "w2", "w3"]);
}

#[tokio::test]
async fn a_bad_request_is_never_forwarded() {
    let state = served().state(ok());
    for body in [
        "",
        "not json",
        r#"{"inputs":[]}"#,
        r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
        r#"{"inputs":[{"name":"other","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#,
    ] {
        let refusal = call(
            &state,
            Call {
                body,
                ..Call::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            refusal.status(),
            StatusCode::BAD_REQUEST,
            "{body}: {refusal}"
        );
    }
    // A bad deadline is a bad request too.
    for deadline in ["0", "-5", "soon"] {
        let refusal = call(
            &state,
            Call {
                deadline: Some(deadline),
                ..Call::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST, "{deadline}");
    }
    assert_eq!(state.upstream.sent(), []);
}

#[tokio::test]
async fn binary_requests_are_forwarded_with_their_header_length_and_bad_ones_never() {
    let state = served().state(ok());
    let header = r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
    let tail: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let length = header.len().to_string();
    let binary = Call {
        body: header,
        tail: &tail,
        header_length: Some(&length),
        ..Call::default()
    };
    let relay = call(&state, binary).await.unwrap();
    assert_eq!(relay.answer.status, StatusCode::OK);
    let sent = state.upstream.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header_length, Some(header.len()));
    assert_eq!(sent[0].body, [header.as_bytes(), &tail].concat());

    let beyond = (header.len() + tail.len() + 1).to_string();
    for refused in [
        Call {
            header_length: Some("-1"),
            ..binary
        },
        Call {
            header_length: Some(&beyond),
            ..binary
        },
        Call {
            tail: &tail[..12],
            ..binary
        },
        Call {
            header_length: None,
            ..binary
        },
    ] {
        let refusal = call(&state, refused).await.unwrap_err();
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST, "{refusal}");
    }
    assert_eq!(
        state.upstream.sent().len(),
        1,
        "a bad request was forwarded"
    );
}
