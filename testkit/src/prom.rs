//! Reading Prometheus text expositions (`/metrics` bodies) in tests and tools.

/// Sum of the samples of `name` (optionally only those with label `k="v"`) in a
/// Prometheus text exposition. Histograms' `_bucket`/`_sum`/`_count` are other names.
pub fn metric_sum(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            if let Some(w) = &wanted
                && !labels.split(',').any(|l| l == w)
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        // An empty `sum()` of floats is -0.0.
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_series_by_name_and_label() {
        let text = "# HELP x_total help\n# TYPE x_total counter\n\
                    x_total{result=\"ok\"} 3\nx_total{result=\"error\"} 2\n\
                    x_total_bucket{le=\"1\"} 9\ny 7\n";
        assert_eq!(metric_sum(text, "x_total", None), 5.0);
        assert_eq!(metric_sum(text, "x_total", Some(("result", "ok"))), 3.0);
        assert_eq!(metric_sum(text, "x_total", Some(("result", "none"))), 0.0);
        assert_eq!(metric_sum(text, "y", None), 7.0);
        assert_eq!(metric_sum(text, "missing", None), 0.0);
    }
}
