//! Probes of the routers from outside: how long until a change written to etcd shows in
//! every router's answers (a rotated key accepted, a published model found), and the
//! resource readings (`/proc` CPU and RSS, a Prometheus counter) the report needs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
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

/// Milliseconds until `accept(status)` holds at every router, polled every 5 ms.
async fn until_every_router(
    http: &reqwest::Client,
    routers: &[String],
    model: &str,
    key: &str,
    body: &str,
    accept: impl Fn(u16) -> bool,
    since: Instant,
) -> anyhow::Result<f64> {
    let mut worst: f64 = 0.0;
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
        worst = worst.max(since.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(worst)
}

/// Rotates `sample`'s key (its record rewritten with a new digest only) and returns the
/// milliseconds until every router accepts the new key.
pub async fn rotation(
    cp: &ControlPlane,
    http: &reqwest::Client,
    routers: &[String],
    sample: &mut Sample,
    body: &str,
) -> anyhow::Result<f64> {
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
/// one transaction) and returns the milliseconds until every router routes it.
pub async fn publish(
    cp: &ControlPlane,
    world: &World,
    http: &reqwest::Client,
    routers: &[String],
    sample: &Sample,
    name: &str,
    body: &str,
) -> anyhow::Result<f64> {
    let key = ModelKey::new(sample.tenant.clone(), ModelName::new(name)?);
    let version = VersionId::new("1")?;
    let mut manifest = world.manifest.clone();
    manifest.tenant = key.tenant.clone();
    manifest.model = key.model.clone();
    manifest.version = version.clone();
    let live = LiveVersion {
        version: version.clone(),
        updated_at: shardline_control::ops::unix_now(),
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

/// The value of an unlabelled counter or gauge at `metrics_url`.
pub async fn metric(http: &reqwest::Client, metrics_url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(metrics_url).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{metrics_url} has no {name}"))
}

/// The `q` quantile (0..=1) of `values` (nearest rank), 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert_eq!(quantile(&[], 0.99), 0.0);
    }
}
