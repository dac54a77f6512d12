//! A real Prometheus for the observability suite: Debian's binary and `promtool`, started
//! with the Kubernetes job of `deploy/prometheus/prometheus.yml` (its discovery swapped
//! for a file of the same pod labels) and the shipped alert rules, scraping a test fleet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardline_testkit::fleet::TestFleet;
use shardline_testkit::{ManagedProcess, free_port};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `promtool`/`prometheus` from PATH or Debian's location.
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: install Debian's `prometheus` (scripts/ensure-deps.sh does)")
    })
}

/// A real Prometheus scraping the fleet.
pub struct Prometheus {
    url: String,
    http: reqwest::Client,
    _process: ManagedProcess,
}

impl Prometheus {
    pub async fn start(fleet: &TestFleet) -> Self {
        let port = free_port();
        let mut process = ManagedProcess::new("prometheus", tool("prometheus")).unwrap();
        let dir = process.dir().to_owned();
        std::fs::write(dir.join("prometheus.yml"), test_config()).unwrap();
        std::fs::copy(
            repo_root().join("deploy/prometheus/alerts.yml"),
            dir.join("alerts.yml"),
        )
        .unwrap();
        std::fs::write(dir.join("targets.json"), pod_targets(fleet).to_string()).unwrap();
        process = process.args([
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ]);
        process.spawn().await.unwrap();
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ready(
                &format!("{url}/-/ready"),
                Duration::from_secs(30),
                |s, _| s.is_success(),
            )
            .await
            .unwrap();
        Self {
            url,
            http: fleet.http.clone(),
            _process: process,
        }
    }

    /// Waits until exactly `n` targets are scraped and up (the decoy pod is dropped by
    /// the relabelling).
    pub async fn wait_targets_up(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut up, mut all) = (0, 0);
        while Instant::now() < deadline {
            up = self.query("up == 1").await.unwrap_or(0);
            all = self.query("up").await.unwrap_or(0);
            if up == n && all == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(
            (up, all),
            (n, n),
            "targets up / scraped, want {n} of {n} (and no decoy)"
        );
        let instances = self.query("up{instance=~\"r-0|w-0|w-1\"}").await.unwrap();
        assert_eq!(instances, n, "`instance` should be the pod name");
    }

    /// Evaluates `query` now; the number of series or an error.
    pub async fn query(&self, query: &str) -> Result<usize, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .map_err(|e| e.to_string())?;
        let resp: Value = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if resp["status"] != "success" {
            return Err(format!("{}: {}", resp["errorType"], resp["error"]));
        }
        match &resp["data"]["result"] {
            Value::Array(series) => Ok(series.len()),
            // A scalar (e.g. `vector(0)` folded): one value.
            Value::Null => Ok(0),
            _ => Ok(1),
        }
    }

    /// Waits until `query` returns one series (e.g. a `sum(...) > 0` holds).
    pub async fn wait_for(&self, query: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.query(query).await;
            if got == Ok(1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus does not see the load's effect within {within:?}: {query} gave {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The JSON answer of `GET /api/v1/{path}`.
    pub async fn api(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Names of every `shardline_*` series Prometheus holds.
    pub async fn metric_names(&self) -> BTreeSet<String> {
        let resp = self.api("label/__name__/values").await;
        resp["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|n| n.starts_with("shardline_"))
            .map(str::to_owned)
            .collect()
    }

    /// The shipped alert rules are loaded and evaluate without errors.
    pub async fn check_rules_loaded(&self) {
        let resp = self.api("rules").await;
        let rules: Vec<&Value> = resp["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert!(rules.len() >= 5, "alert rules not loaded: {resp}");
        for r in rules {
            assert_eq!(
                r["health"], "ok",
                "rule {} fails: {}",
                r["name"], r["lastError"]
            );
        }
    }
}

/// `deploy/prometheus/prometheus.yml` for the test: 1 s intervals, the Kubernetes pod
/// job with its discovery replaced by `targets.json` (same `__meta_kubernetes_*` labels,
/// same relabelling), and without the static example (its hosts do not exist here).
fn test_config() -> String {
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let replace = |text: &str, from: &str, to: &str| {
        assert!(text.contains(from), "prometheus.yml no longer has {from:?}");
        text.replacen(from, to, 1)
    };
    let mut config = replace(&shipped, "scrape_interval: 15s", "scrape_interval: 1s");
    config = replace(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    let static_job = config.find("  - job_name: shardline-static").unwrap();
    config.truncate(static_job);
    let sd = config.find("    kubernetes_sd_configs:").unwrap();
    let relabel = sd + config[sd..].find("    relabel_configs:").unwrap();
    config.replace_range(
        sd..relabel,
        "    file_sd_configs:\n      - files: [targets.json]\n        refresh_interval: 1s\n",
    );
    config
}

/// A file-discovery stand-in for Kubernetes pod discovery: each process as a running pod
/// whose `__address__` has the wrong port (the annotation must fix it), plus a pod
/// without the scrape annotation that must not be scraped.
fn pod_targets(fleet: &TestFleet) -> Value {
    let pod = |name: &str, metrics_url: &str, scrape: &str| {
        let port = metrics_url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/metrics");
        json!({
            "targets": ["127.0.0.1:1"],
            "labels": {
                "__meta_kubernetes_namespace": "shardline",
                "__meta_kubernetes_pod_name": name,
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
                "__meta_kubernetes_pod_annotation_prometheus_io_port": port,
                "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
            }
        })
    };
    let mut groups: Vec<Value> = metrics_urls(fleet)
        .iter()
        .map(|(name, url)| pod(name, url, "true"))
        .collect();
    groups.push(pod("decoy", &fleet.routers[0].metrics_url, "false"));
    Value::Array(groups)
}

/// `(name, /metrics URL)` of every process of the fleet.
pub fn metrics_urls(fleet: &TestFleet) -> Vec<(String, String)> {
    let routers = fleet
        .routers
        .iter()
        .map(|r| (r.id.clone(), r.metrics_url.clone()));
    let workers = fleet
        .workers
        .iter()
        .map(|w| (w.id.clone(), w.metrics_url.clone()));
    routers.chain(workers).collect()
}
