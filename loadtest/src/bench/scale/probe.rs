//! Probes of the routers from outside: how long until a change written to etcd shows in
//! every router's answers (a rotated key accepted, a published model found).

use std::time::{Duration, Instant};

use shardline_control::ControlPlane;
use shardline_control::store::{Op, Txn};
use shardline_shared::auth::ApiKey;
use shardline_shared::ids::{ModelKey, ModelName, VersionId};
use shardline_shared::keys::Key;
use shardline_shared::records::{LiveVersion, TenantLimits, TenantRecord};

use super::populate::{MODEL, Sample, World};

/// Longest wait for one change to show before the probe gives up.
const GIVE_UP: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

/// The OIP body every probe sends (the probe model's four features).
pub fn body(width: usize) -> String {
    let data: Vec<f32> = (0..width).map(|i| i as f32 / width as f32).collect();
    serde_json::json!({"inputs": [{"name": "features", "shape": [1, width],
        "datatype": "FP32", "data": data}]})
    .to_string()
}

/// One inference through `router` for `model` with `key`; the HTTP status.
pub async fn score(
    http: &reqwest::Client,
    router: &str,
    model: &str,
    key: &str,
    body: &str,
) -> anyhow::Result<u16> {
    let response = http
        .post(format!("{router}/v2/models/{model}/infer"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Time until `accept(status)` holds at every router, polled every 5 ms.
async fn until_every_router(
    http: &reqwest::Client,
    routers: &[String],
    model: &str,
    key: &str,
    body: &str,
    accept: impl Fn(u16) -> bool,
    since: Instant,
) -> anyhow::Result<Duration> {
    for router in routers {
        loop {
            let status = score(http, router, model, key, body).await.unwrap_or(0);
            if accept(status) {
                break;
            }
            if since.elapsed() > GIVE_UP {
                anyhow::bail!("{router} still answers {status} for {model} after {GIVE_UP:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    // The routers are polled in turn: the last one answered at the slowest's time.
    Ok(since.elapsed())
}

/// Rotates `sample`'s key (its record rewritten with a new digest only) and returns the
/// time until every router accepts the new key.
pub async fn rotation(
    cp: &ControlPlane,
    http: &reqwest::Client,
    routers: &[String],
    sample: &mut Sample,
    body: &str,
) -> anyhow::Result<Duration> {
    let api = ApiKey::generate()?;
    let now = shardline_control::ops::unix_now();
    let record = TenantRecord {
        shard_size: None,
        limits: TenantLimits::default(),
        keys: vec![api.digest(now)],
        created_at: now,
    };
    let started = Instant::now();
    cp.store()
        .txn(Txn::new().op(Op::put(
            cp.key(&Key::Tenant(sample.tenant.clone())),
            serde_json::to_vec(&record)?,
        )))
        .await?;
    sample.key = api.expose().to_owned();
    until_every_router(
        http,
        routers,
        MODEL,
        &sample.key,
        body,
        |s| s != 401,
        started,
    )
    .await
}

/// Publishes a new model `name` for `sample`'s tenant (a manifest and its live pointer,
/// one transaction) and returns the time until every router routes it.
pub async fn publish(
    cp: &ControlPlane,
    world: &World,
    http: &reqwest::Client,
    routers: &[String],
    sample: &Sample,
    name: &str,
    body: &str,
) -> anyhow::Result<Duration> {
    let key = ModelKey::new(sample.tenant.clone(), ModelName::new(name)?);
    let version = VersionId::new("1")?;
    let mut manifest = world.manifest.clone();
    manifest.tenant = key.tenant.clone();
    manifest.model = key.model.clone();
    manifest.version = version.clone();
    let live = LiveVersion {
        version: version.clone(),
        updated_at: shardline_control::ops::unix_now(),
        canary: None,
        shadow: None,
    };
    let started = Instant::now();
    cp.store()
        .txn(
            Txn::new()
                .op(Op::put(
                    cp.key(&Key::ModelVersion(key.clone(), version)),
                    serde_json::to_vec(&manifest)?,
                ))
                .op(Op::put(
                    cp.key(&Key::LiveVersion(key)),
                    serde_json::to_vec(&live)?,
                )),
        )
        .await?;
    until_every_router(
        http,
        routers,
        name,
        &sample.key,
        body,
        |s| s == 200,
        started,
    )
    .await
}
