//! The in-flight byte budget on the inference path: a request reserves its declared
//! body before reading it, a request that does not fit gets 503 with `Retry-After`
//! and is never forwarded, and the bytes come back when a request ends — also when it
//! is dropped mid-body (the client went away) or mid-forward.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::StatusCode;

use super::{Call, FakeUpstream, Reply, VALID, World, call};
use crate::error::RouterError;
use crate::infer::{InferRequest, KeyMemo, handle};

fn request(content_length: Option<u64>) -> InferRequest<'static> {
    InferRequest {
        name: "risk",
        version: None,
        chosen: None,
        authorization: Some(b"Bearer acme-key"),
        deadline: None,
        header_length: None,
        route_key: None,
        content_length,
    }
}

/// `acme/risk` on one worker answering as `reply`; bodies up to 1,000 bytes, 2,500 of
/// them in flight.
fn world(reply: Reply) -> std::sync::Arc<crate::state::AppState<FakeUpstream>> {
    World::new()
        .worker("w1", true)
        .assign(&["w1"], &[])
        .limits(|l| {
            l.max_body = 1000;
            l.max_inflight_bytes = 2500;
        })
        .state(FakeUpstream::new(&[("w1", reply)]))
}

#[tokio::test]
async fn bodies_past_the_budget_get_503_until_earlier_ones_end() {
    let state = world(Reply::Status(200));
    // Two requests whose bodies have not come yet hold 2 × 1,000 bytes.
    let (mut keys_a, mut keys_b) = (KeyMemo::default(), KeyMemo::default());
    let a = handle(
        &state,
        request(Some(1000)),
        std::future::pending(),
        &mut keys_a,
    );
    let b = handle(&state, request(None), std::future::pending(), &mut keys_b);
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    assert!(poll_once(a.as_mut()).await.is_none());
    assert!(poll_once(b.as_mut()).await.is_none());
    assert_eq!(state.inflight.in_use(), 2000);
    assert_eq!(state.metrics.inflight_bytes.get(), 2000);
    // 500 more fit; 501 do not, whatever the body turns out to be.
    let small = Call {
        body: VALID,
        ..Call::default()
    };
    assert_eq!(call(&state, small).await.unwrap().answer.status, 200);
    let mut keys = KeyMemo::default();
    let refused = handle(
        &state,
        request(Some(501)),
        std::future::ready(Ok(Bytes::from_static(VALID.as_bytes()))),
        &mut keys,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, RouterError::Unavailable(_)),
        "{refused:?}"
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = axum::response::IntoResponse::into_response(refused);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(state.metrics.inflight_bytes_refused.get(), 1);
    assert_eq!(
        state.upstream.sent().len(),
        1,
        "the refused request was forwarded"
    );
    // The clients of the first two go away: their bytes come back.
    drop((a, b));
    assert_eq!(state.inflight.in_use(), 0);
    assert_eq!(state.metrics.inflight_bytes.get(), 0);
}

#[tokio::test]
async fn a_request_dropped_mid_forward_gives_its_bytes_back() {
    let state = world(Reply::Hang);
    let mut keys = KeyMemo::default();
    let body = Bytes::from_static(VALID.as_bytes());
    let mut hung = Box::pin(handle(
        &state,
        request(Some(body.len() as u64)),
        std::future::ready(Ok(body.clone())),
        &mut keys,
    ));
    assert!(poll_once(hung.as_mut()).await.is_none());
    assert_eq!(state.upstream.sent().len(), 1);
    assert_eq!(state.inflight.in_use(), body.len() as u64);
    drop(hung);
    assert_eq!(state.inflight.in_use(), 0);
}

#[tokio::test]
async fn refusals_before_the_body_reserve_nothing() {
    let state = world(Reply::Status(200));
    let mut keys = KeyMemo::default();
    let unauthenticated = InferRequest {
        authorization: None,
        ..request(Some(1000))
    };
    let refused = handle(&state, unauthenticated, std::future::pending(), &mut keys).await;
    assert_eq!(refused.unwrap_err(), RouterError::Unauthorized);
    // Declared longer than --max-body: reserves --max-body, then 413 from the body read.
    let too_large = handle(
        &state,
        request(Some(u64::MAX)),
        std::future::ready(Err(RouterError::TooLarge(1000))),
        &mut keys,
    )
    .await;
    assert_eq!(too_large.unwrap_err(), RouterError::TooLarge(1000));
    assert_eq!(state.inflight.in_use(), 0);
    assert_eq!(state.metrics.inflight_bytes_refused.get(), 0);
}

/// Polls `f` once: its output if it finished, `None` if it waits.
async fn poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
