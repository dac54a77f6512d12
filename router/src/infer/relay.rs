//! A worker's answer as the client gets it ([`Relay`]): the worker's status, content
//! type, `Retry-After`, `Inference-Header-Content-Length` and body, plus the header naming the worker — as header pairs
//! for the fast path's byte writer and as an axum response for the routes.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use shardline_shared::decode::INFERENCE_HEADER;

use crate::codec::WORKER_HEADER;
use crate::upstream::Answer;

/// A worker's answer as the client gets it: status, content type, `Retry-After` and
/// body as the worker gave them, plus the header naming the worker.
#[derive(Debug)]
pub struct Relay {
    /// The worker's id as a header value (`None` if it cannot be one).
    pub worker: Option<HeaderValue>,
    pub answer: Answer,
}

impl Relay {
    pub(super) fn new(worker: Option<HeaderValue>, answer: Answer) -> Self {
        Self { worker, answer }
    }

    /// The answer's headers other than its framing, as name and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        let content_type = self.answer.content_type.as_ref().unwrap_or(&JSON);
        [
            Some(("content-type", content_type)),
            self.answer.retry_after.as_ref().map(|v| ("retry-after", v)),
            self.answer
                .header_length
                .as_ref()
                .map(|v| (INFERENCE_HEADER, v)),
            self.worker.as_ref().map(|v| (WORKER_HEADER, v)),
        ]
        .into_iter()
        .flatten()
    }
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl IntoResponse for Relay {
    fn into_response(self) -> Response {
        let mut response = (self.answer.status, self.answer.body.clone()).into_response();
        for (name, value) in self.headers() {
            response.headers_mut().insert(name, value.clone());
        }
        response
    }
}
