//! The dashboards in `deploy/grafana/dashboards` as data: their queries, and the metric
//! names those queries read (what a test checks the services export).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Every PromQL expression of every dashboard, with its file name. Panics on a file
/// that is not a dashboard (JSON with panels and targets).
pub fn expressions(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dashboard: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        assert!(
            dashboard["uid"].is_string() && dashboard["title"].is_string(),
            "{name}"
        );
        let panels = dashboard["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no panels"));
        for panel in panels {
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: a panel without targets"));
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no expr"));
                out.push((name.clone(), expr.to_owned()));
            }
        }
    }
    out
}

/// Words of PromQL that are not metrics: binary operators, modifiers and aggregation
/// operators (which may be followed by `by (…)` rather than their parentheses).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names an expression reads: identifiers that are not functions,
/// aggregation keywords, grouping labels (`by (…)`), label matchers (`{…}`), strings or
/// ranges (`[5m]`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0, 0);
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
            }
            ')' if skip_group => skip_group = false,
            c if (c.is_ascii_alphabetic() || c == '_') && braces == 0 && brackets == 0 => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric()
                        || chars[i + 1] == '_'
                        || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    skip_group = true;
                } else if next != Some(&'(') && !skip_group && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The metric names a Prometheus text exposition holds.
pub fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_leave_out_functions_groupings_matchers_and_ranges() {
        let names = metric_names(
            r#"sum by (route, status) (rate(http_requests_total{status=~"5..", route="/v1/x"}[5m])) / max(relay_lag_events)"#,
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["http_requests_total", "relay_lag_events"]
        );
        assert!(
            metric_names("max(http_request_duration_seconds{quantile=\"0.99\"})")
                .contains("http_request_duration_seconds")
        );
    }

    #[test]
    fn exported_names_come_from_sample_lines() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 3\nb 1\n";
        assert_eq!(
            exported(text).into_iter().collect::<Vec<_>>(),
            ["a_total", "b"]
        );
    }
}
