//! `shardctl compare`: how a model's shadow version scores against the served one, from
//! the routers' own metrics (`shardline_router_shadow_*` on each router's `/metrics`):
//! requests compared, mismatched, failed and dropped, and the mean, p50, p99 and largest
//! absolute score difference, summed over the routers given. Per model only when the
//! routers run with `--per-model-metrics`; otherwise their totals over every model,
//! said so in the output.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use shardline_shared::ids::{ModelKey, ModelName, TenantId};
use shardline_shared::metrics as names;

use super::context::{Output, parse_id};
use super::error::CliError;

/// `shardctl compare`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub model: String,
    /// A router's metrics address (`http://host:9090` or its `/metrics` URL); repeat for
    /// every router, or list them comma-separated in the environment variable.
    #[arg(
        long = "router",
        env = "SHARDLINE_ROUTER_METRICS",
        value_delimiter = ',',
        required = true
    )]
    pub routers: Vec<String>,
}

/// One sample of Prometheus text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format's sample lines (comments and blanks skipped;
/// label values may hold escaped quotes).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => (n, labels(l.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while let Some((key, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        s = &rest[end + 1..];
    }
    Some(out)
}

/// The shadow comparison of one model (or of every model, without per-model labels).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Whether the figures are the model's own (`false`: the routers' totals).
    pub per_model: bool,
    pub compared: f64,
    pub mismatched: f64,
    pub errors: f64,
    pub dropped: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Sums `samples` (from every router) into `model`'s comparison.
pub fn compare(samples: &[Sample], model: &ModelKey) -> Comparison {
    let wanted = model.shard_key();
    let per_model = samples
        .iter()
        .any(|s| s.name.starts_with("shardline_router_shadow") && s.labels.contains_key("model"));
    let ours = |s: &&Sample| !per_model || s.labels.get("model") == Some(&wanted);
    let sum = |name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name)
            .filter(ours)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
            .map(|s| s.value)
            .sum()
    };
    let result = |r: &str| sum(names::ROUTER_SHADOW_REQUESTS_TOTAL, Some(("result", r)));
    let hist = names::ROUTER_SHADOW_ABS_DIFF;
    let count = sum(&format!("{hist}_count"), None);
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == format!("{hist}_bucket"))
        .filter(ours)
    {
        let Some(le) = s.labels.get("le").and_then(|l| l.parse::<f64>().ok()) else {
            continue;
        };
        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
    }
    let mut cumulative: Vec<(f64, f64)> = buckets.into_values().collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max = samples
        .iter()
        .filter(|s| s.name == names::ROUTER_SHADOW_ABS_DIFF_MAX)
        .filter(ours)
        .map(|s| s.value)
        .reduce(f64::max);
    Comparison {
        per_model,
        compared: result("compared"),
        mismatched: result("mismatch"),
        errors: result("error"),
        dropped: result("dropped"),
        mean: (count > 0.0).then(|| sum(&format!("{hist}_sum"), None) / count),
        p50: quantile(0.5, &cumulative),
        p99: quantile(0.99, &cumulative),
        max,
    }
}

/// `histogram_quantile` as Prometheus computes it: linear within the bucket that holds
/// the rank; the highest finite bound when the rank falls in `+Inf`.
pub fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in cumulative {
        if count >= rank {
            if le.is_infinite() {
                return Some(below.0);
            }
            let share = if count > below.1 {
                (rank - below.1) / (count - below.1)
            } else {
                0.0
            };
            return Some(below.0 + (le - below.0) * share);
        }
        below = (le, count);
    }
    Some(below.0)
}

/// Scrapes every router and prints the comparison.
pub async fn run(args: CompareArgs) -> Result<Output, CliError> {
    let model = ModelKey::new(
        parse_id::<TenantId>(&args.tenant)?,
        parse_id::<ModelName>(&args.model)?,
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::failed(format!("http client: {e}")))?;
    let mut samples = Vec::new();
    for router in &args.routers {
        let url = if router.trim_end_matches('/').ends_with("/metrics") {
            router.clone()
        } else {
            format!("{}/metrics", router.trim_end_matches('/'))
        };
        let text = async {
            client
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
        .await
        .map_err(|e| CliError::failed(format!("reading {url}: {e}")))?;
        samples.extend(parse_samples(&text));
    }
    let c = compare(&samples, &model);
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.6}"));
    let scope = if c.per_model {
        format!("{model}")
    } else {
        format!("every model (the routers run without --per-model-metrics; {model} not told apart)")
    };
    let text = format!(
        "{scope}: {} compared over {} routers, {} mismatched, {} errors, {} dropped\n\
         absolute difference: mean {}, p50 {}, p99 {}, max {}\n",
        c.compared,
        args.routers.len(),
        c.mismatched,
        c.errors,
        c.dropped,
        show(c.mean),
        show(c.p50),
        show(c.p99),
        show(c.max),
    );
    let mut json = serde_json::to_value(&c).map_err(|e| CliError::failed(e.to_string()))?;
    json["tenant"] = model.tenant.as_str().into();
    json["model"] = model.model.as_str().into();
    json["routers"] = args.routers.len().into();
    Output::new(text, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ModelKey {
        ModelKey::parse_shard_key(s).unwrap()
    }

    #[test]
    fn samples_parse_with_escaped_labels() {
        let text = "# HELP x y\nshardline_router_shadow_requests_total{model=\"a/b\",result=\"com\\\"pared\"} 3\nplain 2.5\n\n";
        let s = parse_samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["result"], "com\"pared");
        assert_eq!(s[0].labels["model"], "a/b");
        assert_eq!((s[1].name.as_str(), s[1].value), ("plain", 2.5));
    }

    #[test]
    fn two_routers_sum_per_model_and_other_models_are_left_out() {
        let router = |n: f64| {
            format!(
                "shardline_router_shadow_requests_total{{model=\"acme/risk\",result=\"compared\"}} {n}\n\
                 shardline_router_shadow_requests_total{{model=\"other/risk\",result=\"compared\"}} 1000\n\
                 shardline_router_shadow_requests_total{{model=\"acme/risk\",result=\"error\"}} 1\n\
                 shardline_router_shadow_abs_diff_bucket{{model=\"acme/risk\",le=\"0.01\"}} 0\n\
                 shardline_router_shadow_abs_diff_bucket{{model=\"acme/risk\",le=\"0.05\"}} {n}\n\
                 shardline_router_shadow_abs_diff_bucket{{model=\"acme/risk\",le=\"+Inf\"}} {n}\n\
                 shardline_router_shadow_abs_diff_sum{{model=\"acme/risk\"}} {}\n\
                 shardline_router_shadow_abs_diff_count{{model=\"acme/risk\"}} {n}\n\
                 shardline_router_shadow_abs_diff_max{{model=\"acme/risk\"}} 0.02\n",
                n * 0.02
            )
        };
        let mut samples = parse_samples(&router(10.0));
        samples.extend(parse_samples(&router(30.0)));
        let c = compare(&samples, &key("acme/risk"));
        assert!(c.per_model);
        assert_eq!((c.compared, c.errors), (40.0, 2.0));
        assert!((c.mean.unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(c.max, Some(0.02));
        // Rank 20 of 40 in (0.01, 0.05]: halfway.
        assert!((c.p50.unwrap() - 0.03).abs() < 1e-12, "{:?}", c.p50);
        assert_eq!(compare(&samples, &key("acme/none")).mean, None);
    }

    #[test]
    fn quantiles_follow_prometheus() {
        let buckets = [(0.1, 5.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        assert!((quantile(0.75, &buckets).unwrap() - 0.55).abs() < 1e-12);
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 4.0)]), Some(0.0));
        assert_eq!(quantile(0.5, &[]), None);
    }
}
