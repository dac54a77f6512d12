//! The HTTP client `bench-worker` times the worker with: readiness, one single-row infer
//! request (JSON encoded and decoded, as a real caller would), health and unload.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

use shardline_testkit::TOKEN;

/// The benchmark's HTTP client for one worker and model.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) name: String,
}

impl Client {
    pub(super) async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            let r = self
                .http
                .get(format!("{}/v2/health/ready", self.base))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the worker never became ready")
    }

    /// One single-row infer request; encodes the body and decodes the scores.
    pub(super) async fn score(&self, input: &[f32]) -> anyhow::Result<Vec<f32>> {
        let body = serde_json::json!({"inputs": [{
            "name": "features", "shape": [1, input.len()], "datatype": "FP32", "data": input,
        }]});
        let resp = self
            .http
            .post(format!("{}/v2/models/{}/infer", self.base, self.name))
            .header("x-shardline-token", TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status != 200 {
            bail!(
                "infer answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        v["outputs"][0]["data"]
            .as_array()
            .context("no outputs[0].data in the response")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .context("a score is not a number")
            })
            .collect()
    }

    pub(super) async fn health(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .get(format!("{}/v2/health/live", self.base))
            .send()
            .await?;
        ensure!(resp.status() == 200, "health answered {}", resp.status());
        resp.bytes().await?;
        Ok(())
    }

    pub(super) async fn unload(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!(
                "{}/v2/repository/models/{}/unload",
                self.base, self.name
            ))
            .header("x-shardline-token", TOKEN)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == 200, "unload answered {status}: {text}");
        Ok(())
    }
}
