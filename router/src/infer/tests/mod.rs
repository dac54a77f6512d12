//! In-process tests of the inference service: a [`Snapshot`] built from key/value pairs
//! ([`World`]), an [`AppState`] around a scripted [`FakeUpstream`] that records every
//! attempt, and [`handle`] (or the axum [`crate::routes::app`]) called directly — no
//! etcd, no worker process, no socket.

mod failover;
mod inflight;
mod refusals;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use prometheus::Registry;
use serde_json::json;
use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::watch;

use super::{InferRequest, KeyMemo, Relay, handle};
use crate::budget::RetryBudget;
use crate::error::RouterError;
use crate::metrics::RouterMetrics;
use crate::state::{AppState, Limits};
use crate::upstream::{Answer, Attempt, Failure, Outcome, Upstream};

/// A body `acme`'s model `risk` (4 inputs) accepts.
const VALID: &str =
    r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

/// How a fake worker answers every attempt sent to it.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Answers with this status.
    Status(u16),
    /// Refuses the connection.
    Refused,
    /// Says nothing until the attempt's timeout, which then expires.
    Stall,
    /// Never answers (the caller drops the request).
    Hang,
    /// The router has no descriptor left to connect with.
    Exhausted,
}

/// One attempt as the fake upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    worker: String,
    path: String,
    public_name: String,
    revision: i64,
    timeout: Duration,
    body: Bytes,
    header_length: Option<usize>,
}

/// A scripted [`Upstream`]: each worker (by address) answers as its [`Reply`] says;
/// every attempt is recorded.
#[derive(Debug, Default)]
struct FakeUpstream {
    replies: HashMap<String, Reply>,
    sent: Mutex<Vec<Sent>>,
}

impl FakeUpstream {
    fn new(replies: &[(&str, Reply)]) -> Self {
        Self {
            replies: replies.iter().map(|&(w, r)| (address(w), r)).collect(),
            sent: Mutex::default(),
        }
    }

    /// Every attempt so far, in order.
    fn sent(&self) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The workers attempted so far, in order.
    fn workers(&self) -> Vec<String> {
        self.sent().into_iter().map(|s| s.worker).collect()
    }
}

impl Upstream for FakeUpstream {
    async fn send(&self, attempt: Attempt<'_>) -> Outcome {
        let worker = attempt
            .address
            .strip_suffix(".test:1")
            .unwrap_or(attempt.address)
            .to_owned();
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Sent {
                worker: worker.clone(),
                path: attempt.path.to_owned(),
                public_name: attempt.public_name.to_owned(),
                revision: attempt.revision,
                timeout: attempt.timeout,
                body: attempt.body.clone(),
                header_length: attempt.header_length,
            });
        match self.replies.get(attempt.address) {
            Some(Reply::Status(code)) => Outcome::Answered(Answer {
                status: StatusCode::from_u16(*code).unwrap_or(StatusCode::IM_A_TEAPOT),
                content_type: None,
                retry_after: None,
                header_length: None,
                body: Bytes::from(json!({ "worker": worker }).to_string()),
            }),
            Some(Reply::Refused) | None => {
                Outcome::Failed(Failure::Connect(format!("connect to {worker}: refused")))
            }
            Some(Reply::Stall) => {
                tokio::time::sleep(attempt.timeout).await;
                Outcome::Failed(Failure::Timeout)
            }
            Some(Reply::Hang) => std::future::pending().await,
            Some(Reply::Exhausted) => Outcome::Failed(Failure::Exhausted(format!(
                "connect to {worker}: too many open files"
            ))),
        }
    }
}

fn address(worker: &str) -> String {
    format!("{worker}.test:1")
}

/// A control plane as key/value pairs: tenants `acme` (key `acme-key`, model `risk`,
/// live version 1 with a 4-wide input) and `globex` (key `globex-key`, model `secret`),
/// plus whatever workers, admin states and assignments a test adds.
struct World {
    kvs: Vec<(String, String)>,
    limits: Limits,
    budget: RetryBudget,
}

impl World {
    fn new() -> Self {
        let world = Self {
            kvs: Vec::new(),
            limits: Limits {
                max_body: 1 << 16,
                max_rows: 16,
                default_deadline: Duration::from_secs(10),
                max_deadline: Duration::from_secs(60),
                attempt_timeout: Duration::from_secs(1),
                max_inflight_bytes: 1 << 20,
            },
            // Generous: failover tests are not about the budget.
            budget: RetryBudget::new(1000, 1000, Duration::from_secs(10)),
        };
        world
            .tenant("acme", "acme-key", 0, 0)
            .model("acme", "risk")
            .tenant("globex", "globex-key", 0, 0)
            .model("globex", "secret")
    }

    fn put(mut self, key: &str, value: serde_json::Value) -> Self {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_owned(), value.to_string()));
        self
    }

    /// Tenant `id` holding `key`, with its limits (0: unlimited).
    fn tenant(self, id: &str, key: &str, max_in_flight: u32, rate_per_sec: u32) -> Self {
        let digest = hex::encode(shardline_shared::auth::digest_bytes(key));
        self.put(
            &format!("/shardline/tenants/{id}"),
            json!({"keys": [{"id": "k1", "sha256": digest, "created_at": 1}],
                   "limits": {"max_in_flight": max_in_flight, "rate_per_sec": rate_per_sec},
                   "created_at": 1}),
        )
    }

    /// `tenant`'s model `name`, version 1 published and live (4 → 1 MLP).
    fn model(self, tenant: &str, name: &str) -> Self {
        let digest = json!({"sha256": "cd".repeat(32), "size": 20});
        self.put(
            &format!("/shardline/models/{tenant}/{name}/1"),
            json!({"tenant": tenant, "model": name, "version": "1",
                   "location": format!("{tenant}/{name}/1"),
                   "config_file": digest, "weights_file": digest,
                   "config": {"format": "shardline/v1", "architecture": "mlp",
                              "input": {"name": "features", "dim": 4},
                              "layers": [{"weight": "w", "bias": "b", "activation": "sigmoid"}],
                              "output": {"name": "risk", "dim": 1}},
                   "dims": [4, 1], "published_at": 1}),
        )
        .put(
            &format!("/shardline/models/{tenant}/{name}"),
            json!({"version": "1"}),
        )
    }

    /// A live worker; `resident`: it reports `acme/risk` version 1 loaded.
    fn worker(self, id: &str, resident: bool) -> Self {
        let resident: Vec<_> = resident
            .then(|| json!({"tenant": "acme", "model": "risk", "version": "1", "bytes": 1}))
            .into_iter()
            .collect();
        self.put(
            &format!("/shardline/workers/{id}"),
            json!({"address": address(id), "capacity_bytes": 1 << 30,
                   "build_version": "t", "resident": resident}),
        )
    }

    fn draining(self, id: &str) -> Self {
        self.put(
            &format!("/shardline/worker-admin/{id}"),
            json!({"state": "draining"}),
        )
    }

    /// `acme/risk`'s shard: current `workers`, `previous` members still serving.
    fn assign(self, workers: &[&str], previous: &[&str]) -> Self {
        self.put(
            "/shardline/assignments/acme/risk",
            json!({"workers": workers, "epoch": 1, "previous": previous}),
        )
    }

    /// Without the pairs whose key starts with `prefix`.
    fn without(mut self, prefix: &str) -> Self {
        self.kvs.retain(|(k, _)| !k.starts_with(prefix));
        self
    }

    fn limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.limits);
        self
    }

    fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    fn snapshot(&self) -> Snapshot {
        let (snap, invalid) = Snapshot::from_kvs(
            Prefix::default(),
            42,
            self.kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes(), 1)),
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        snap
    }

    /// The router's shared state over this world, sending attempts to `upstream`.
    fn state(self, upstream: FakeUpstream) -> Arc<AppState<FakeUpstream>> {
        let (_, snapshot) = watch::channel(Arc::new(self.snapshot()));
        Arc::new(AppState::new(
            snapshot,
            upstream,
            self.budget,
            self.limits,
            RouterMetrics::register(&Registry::new(), false).unwrap(),
        ))
    }
}

/// One inference request's parts: by default `acme`'s valid request for `risk`.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    name: &'a str,
    version: Option<&'a str>,
    authorization: Option<&'a str>,
    deadline: Option<&'a str>,
    body: &'a str,
    /// Bytes after `body` (binary tensor data).
    tail: &'a [u8],
    /// The `Inference-Header-Content-Length` value.
    header_length: Option<&'a str>,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Self {
            name: "risk",
            version: None,
            authorization: Some("Bearer acme-key"),
            deadline: None,
            body: VALID,
            tail: b"",
            header_length: None,
        }
    }
}

/// Runs `call` through the inference service on a fresh connection.
async fn call<U: Upstream>(state: &AppState<U>, call: Call<'_>) -> Result<Relay, RouterError> {
    let request = InferRequest {
        name: call.name,
        version: call.version,
        chosen: None,
        authorization: call.authorization.map(str::as_bytes),
        deadline: call.deadline.map(str::as_bytes),
        header_length: call.header_length.map(str::as_bytes),
        route_key: None,
        content_length: Some((call.body.len() + call.tail.len()) as u64),
    };
    let body = std::future::ready(Ok(Bytes::from([call.body.as_bytes(), call.tail].concat())));
    handle(state, request, body, &mut KeyMemo::default()).await
}
