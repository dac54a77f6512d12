//! The simulated workers' internal API, as far as the placement controller uses it: each
//! simulated worker gets its own loopback listener (its record's address) answering
//! `POST /v2/repository/models/{tenant}.{model}/load` as a real worker does — the
//! internal token checked, an unknown model or version refused with 404 — except that
//! instead of loading it writes the worker's `resident/…` key under the worker's lease
//! and answers 200 once that write is committed. So a resident key of a simulated worker
//! appears only because a prefetch reached it, which is what the move audit relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use shardline_control::ControlPlane;
use shardline_control::store::{Op, Txn, TxnOutcome};
use shardline_shared::ids::{ModelKey, VersionId, WorkerId};
use shardline_shared::keys::Key;
use shardline_shared::records::ResidentRecord;
use shardline_shared::wire::TOKEN_HEADER;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Bytes every simulated resident key accounts (as `populate` writes them).
const RESIDENT_BYTES: u64 = 4096;

/// One simulated worker's side of a prefetch.
#[derive(Debug, Clone)]
pub struct SimApi {
    pub cp: ControlPlane,
    pub token: Arc<str>,
    pub worker: WorkerId,
    pub lease: i64,
    /// Loads answered 200, over every simulated worker.
    pub answered: Arc<AtomicU64>,
}

/// The router of one simulated worker.
pub fn app(state: SimApi) -> Router {
    Router::new()
        .route("/v2/repository/models/{name}/load", post(load))
        .with_state(state)
}

async fn load(
    State(s): State<SimApi>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let token = headers.get(TOKEN_HEADER).map(|v| v.as_bytes());
    if token != Some(s.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or invalid internal token".into(),
        );
    }
    let not_found = || (StatusCode::NOT_FOUND, format!("model {name:?} not found"));
    let Some(model) = name
        .split_once('.')
        .and_then(|(t, m)| ModelKey::parse_shard_key(&format!("{t}/{m}")).ok())
    else {
        return not_found();
    };
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["parameters"]["version"].as_str().map(str::to_owned))
        .and_then(|v| VersionId::new(v).ok());
    let Some(version) = version else {
        return (StatusCode::BAD_REQUEST, "no parameters.version".into());
    };
    let manifest =
        s.cp.store()
            .get(&s.cp.key(&Key::ModelVersion(model.clone(), version.clone())))
            .await;
    match manifest {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    let value = serde_json::to_vec(&ResidentRecord {
        bytes: RESIDENT_BYTES,
    })
    .unwrap_or_default();
    let put = Op::Put {
        key: s.cp.key(&Key::Resident(s.worker.clone(), model, version)),
        value,
        lease: s.lease,
    };
    match s.cp.store().txn(Txn::new().op(put)).await {
        Ok(TxnOutcome::Applied { .. }) => {
            s.answered.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, String::new())
        }
        Ok(TxnOutcome::Refused) => (StatusCode::SERVICE_UNAVAILABLE, "write refused".into()),
        // A lost lease: the worker is gone, as a real one would be.
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The listeners of every simulated worker; dropping it stops them.
#[derive(Debug, Default)]
pub struct Responders {
    tasks: Vec<JoinHandle<()>>,
    answered: Arc<AtomicU64>,
}

impl Drop for Responders {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Responders {
    /// Serves `worker`'s internal API on a new loopback port; returns its `host:port`.
    pub async fn add(
        &mut self,
        cp: &ControlPlane,
        token: &str,
        worker: &WorkerId,
        lease: i64,
    ) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let router = app(SimApi {
            cp: cp.clone(),
            token: token.into(),
            worker: worker.clone(),
            lease,
            answered: self.answered.clone(),
        });
        self.tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        Ok(address)
    }

    /// Loads answered 200 so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use shardline_control::EtcdStore;
    use shardline_shared::keys::Prefix;
    use shardline_testkit::{EtcdProcess, TOKEN};

    use super::*;

    async fn load(address: &str, token: &str, name: &str, body: &str) -> u16 {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("http://{address}/v2/repository/models/{name}/load"))
            .header(TOKEN_HEADER, token)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_writes_the_leased_resident_key_only_when_it_is_valid() {
        let etcd = EtcdProcess::start().await.unwrap();
        let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
        let cp = ControlPlane::new(Arc::new(store), Prefix::default());
        let lease = cp
            .store()
            .grant_lease(Duration::from_secs(30))
            .await
            .unwrap();
        let worker = WorkerId::new("s-0001").unwrap();
        let mut responders = Responders::default();
        let address = responders.add(&cp, TOKEN, &worker, lease).await.unwrap();
        let model = ModelKey::parse_shard_key("acme/risk").unwrap();
        let v1 = VersionId::new("1").unwrap();
        let resident = cp.key(&Key::Resident(worker.clone(), model.clone(), v1.clone()));
        let body = r#"{"parameters":{"version":"1"}}"#;

        // Refused before anything is written: no token, no such model, no version.
        assert_eq!(load(&address, "wrong", "acme.risk", body).await, 401);
        assert_eq!(load(&address, TOKEN, "acme.risk", body).await, 404);
        assert!(cp.store().get(&resident).await.unwrap().is_none());
        // The responder only checks that the version's manifest key exists.
        let manifest = cp.key(&Key::ModelVersion(model.clone(), v1));
        cp.store()
            .txn(Txn::new().op(Op::put(manifest, b"{}".to_vec())))
            .await
            .unwrap();
        assert_eq!(load(&address, TOKEN, "acme.risk", "{}").await, 400);
        assert!(cp.store().get(&resident).await.unwrap().is_none());
        assert_eq!(responders.answered(), 0);

        // A valid load: the key is there, under the worker's lease, once it answers.
        assert_eq!(load(&address, TOKEN, "acme.risk", body).await, 200);
        let kv = cp.store().get(&resident).await.unwrap().unwrap();
        assert_eq!(kv.lease, lease);
        assert_eq!(responders.answered(), 1);

        // A worker whose lease is gone cannot load (and its key went with the lease).
        cp.store().revoke_lease(lease).await.unwrap();
        assert_eq!(load(&address, TOKEN, "acme.risk", body).await, 503);
        assert!(cp.store().get(&resident).await.unwrap().is_none());
    }
}
