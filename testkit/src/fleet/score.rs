//! Scoring through a fleet: OIP bodies and deterministic rows, a [`Reply`] read whole,
//! requests through a router or straight to a worker's internal API, and a node's
//! `/metrics` and resident models.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{DIM, TestFleet};
use crate::TOKEN;
use crate::fleet::node::Node;

impl TestFleet {
    /// How many of `n` requests for `model` naming no version (32 at a time, each must
    /// succeed) each version served, through router `r`.
    pub async fn version_counts(
        &self,
        r: usize,
        key: &str,
        model: &str,
        n: usize,
    ) -> BTreeMap<String, usize> {
        const LANES: usize = 32;
        let url = format!("{}/v2/models/{model}/infer", self.routers[r].url);
        let body = serde_json::to_vec(&infer_body(&rows(1, 5))).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..LANES {
            let (http, url, key, body) =
                (self.http.clone(), url.clone(), key.to_owned(), body.clone());
            let share = n / LANES + usize::from(lane < n % LANES);
            tasks.spawn(async move {
                let mut seen = Vec::with_capacity(share);
                for _ in 0..share {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let v: Value = resp.json().await.unwrap();
                    seen.push(v["model_version"].as_str().unwrap_or("").to_owned());
                }
                seen
            });
        }
        let mut counts = BTreeMap::new();
        while let Some(seen) = tasks.join_next().await {
            for v in seen.unwrap() {
                *counts.entry(v).or_default() += 1;
            }
        }
        counts
    }

    /// Scores `rows` of `model` through router `r` with `key`.
    pub async fn infer(&self, r: usize, key: &str, model: &str, rows: &[Vec<f32>]) -> Reply {
        let url = format!("{}/v2/models/{model}/infer", self.routers[r].url);
        let resp = self
            .http
            .post(url)
            .bearer_auth(key)
            .json(&infer_body(rows))
            .send()
            .await
            .unwrap();
        Reply::read(resp).await
    }

    /// Scores `rows` on worker `w` directly (internal API).
    pub async fn infer_direct(
        &self,
        w: usize,
        tenant: &str,
        model: &str,
        rows: &[Vec<f32>],
    ) -> Reply {
        let resp = self.workers[w]
            .infer(&format!("{tenant}.{model}"), infer_body(rows).to_string())
            .await;
        Reply::read(resp).await
    }

    /// Sum of a counter (all label sets) on router `r`'s `/metrics`.
    pub async fn router_metric(&self, r: usize, name: &str) -> f64 {
        crate::metric_sum(&self.routers[r].metrics_text().await, name, None)
    }
}

impl Node {
    /// `http://{addr}{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs an infer request body for `tenant.model` to a worker (internal API).
    pub async fn infer(&self, name: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.endpoint(&format!("/v2/models/{name}/infer")))
            .header("x-shardline-token", TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Scores `rows` rows of `input` on a worker and returns the values, asserting success.
    pub async fn score(&self, name: &str, input: &[f32], rows: usize) -> Vec<f32> {
        let dim = input.len() / rows;
        let body = json!({"inputs": [{"name": "features", "shape": [rows, dim], "datatype": "FP32", "data": input}]});
        let reply = Reply::read(self.infer(name, body.to_string()).await).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.scores().into_iter().map(|x| x as f32).collect()
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let resp = self.http.get(&self.metrics_url).send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// One series of `/metrics`, written as exposed (`name` or `name{label="value"}`, at
    /// most one label), summed over the label sets not named; 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (name, label) = match series.split_once('{') {
            Some((name, rest)) => {
                let (k, v) = rest.trim_end_matches('}').split_once('=').unwrap();
                (name, Some((k, v.trim_matches('"'))))
            }
            None => (series, None),
        };
        crate::metric_sum(&self.metrics_text().await, name, label)
    }

    /// The resident models of a worker as `/v2/repository/index` lists them.
    pub async fn index(&self) -> Vec<Value> {
        let resp = self
            .http
            .get(self.endpoint("/v2/repository/index"))
            .header("x-shardline-token", TOKEN)
            .send()
            .await
            .unwrap();
        resp.json::<Vec<Value>>().await.unwrap()
    }

    /// Names (`tenant.model`) of a worker's resident models.
    pub async fn resident(&self) -> Vec<String> {
        let index = self.index().await;
        index
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// An OIP infer body for `rows`.
pub fn infer_body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({
        "id": "req-1",
        "inputs": [{"name": "features", "shape": [rows.len(), DIM], "datatype": "FP32", "data": data}]
    })
}

/// Deterministic feature rows.
pub fn rows(n: usize, seed: u32) -> Vec<Vec<f32>> {
    (0..n)
        .map(|r| {
            (0..DIM)
                .map(|c| (((r * 31 + c * 7) as u32 + seed * 13) % 97) as f32 / 97.0 - 0.5)
                .collect()
        })
        .collect()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub worker: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let worker = header("x-shardline-worker");
        let retry_after = header("retry-after");
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            worker,
            retry_after,
            body,
        }
    }

    /// The first output's data.
    pub fn scores(&self) -> Vec<f64> {
        self.body["outputs"][0]["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no outputs in {}", self.body))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }
}
