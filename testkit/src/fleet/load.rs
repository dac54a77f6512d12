//! Open-loop load through a router while a test changes the fleet underneath it.

use std::time::Duration;

use super::{infer_body, rows};

/// What a steady load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    /// One line per failed request: when (since the start), what.
    pub failures: Vec<String>,
}

/// Open-loop load: `rate` requests per second for `duration`, round-robin over
/// `(api key, model)` pairs, each request on its own task (a slow answer does not slow
/// the arrivals). Returns when every request has been answered.
pub async fn steady_load(
    http: reqwest::Client,
    url: String,
    targets: Vec<(String, String)>,
    rate: u32,
    duration: Duration,
) -> LoadReport {
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs(1) / rate;
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let body = serde_json::to_vec(&infer_body(&rows(1, 7))).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let (key, model) = targets[i % targets.len()].clone();
        let req = http
            .post(format!("{url}/v2/models/{model}/infer"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.clone());
        tasks.spawn(async move {
            let at = started.elapsed();
            match req.send().await {
                Ok(resp) if resp.status() == 200 => Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    Err(format!("{at:?} {model}: {status} {text}"))
                }
                Err(e) => Err(format!("{at:?} {model}: {e}")),
            }
        });
    }
    let mut report = LoadReport {
        sent: total,
        ..LoadReport::default()
    };
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => report.ok += 1,
            Err(e) => report.failures.push(e),
        }
    }
    report
}
