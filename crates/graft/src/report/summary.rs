//! Summaries of measurement files: JSONL lines (one per run, as the measurement scripts and
//! `--json` outputs write them) grouped by some of their fields, with the mean, sample standard
//! deviation and range of chosen numeric fields per group. `graft report` renders them as
//! Markdown, JSON and an HTML page with one chart per metric, the same three files
//! `graft compare` writes, for results that no single command produced.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

use super::curves::{summarize_curve, CurveSpec, CurveSummary};
use crate::{GraftError, Result};

/// What to summarise: how rows are grouped and which fields are measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummarySpec {
    /// The report's heading.
    pub title: String,
    /// Fields whose values name a row's group, in order (dotted paths reach into objects:
    /// `pretraining.steps`). A row lacking one of them is left out and counted.
    pub group_by: Vec<String>,
    /// Numeric fields to summarise (dotted paths). Empty: every numeric field of the rows (in
    /// the order first seen; within a line, by name), except the grouping fields and `seed`.
    pub metrics: Vec<String>,
    /// Also summarise each group's differences from a baseline group, row by row.
    pub against: Option<Baseline>,
    /// Learning curves to average per group and draw.
    pub curves: Vec<CurveSpec>,
    /// A numeric grouping field to draw every metric against (a line per combination of the
    /// other grouping fields): a label-efficiency curve over `label_fraction`, say.
    pub x: Option<String>,
}

/// The baseline of paired differences: for every group whose `field` is not `value`, the group
/// with the same other grouping values and `field` = `value`; rows pair up by `pair_on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// A grouping field (`start`).
    pub field: String,
    /// Its value in the baseline groups, as text (`base`).
    pub value: String,
    /// The field that pairs a row with the baseline's row (`seed`).
    pub pair_on: String,
}

/// Paired differences from the baseline groups (`group - baseline`, row by row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Differences {
    /// What the differences are taken against.
    pub baseline: Baseline,
    /// One entry per group that has a baseline group: its label reads `cpt · 100 − base · 100`,
    /// `rows` is the number of pairs, and each metric's statistics are over the per-pair
    /// differences.
    pub groups: Vec<GroupSummary>,
}

/// Mean, spread and values of one metric within one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    /// The metric's field path.
    pub metric: String,
    /// Rows of the group with a value for it.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); `None` with a single value.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The values, in file order.
    pub values: Vec<f64>,
}

/// One group of rows: those whose grouping fields have the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The grouping values joined with ` · `: `cpt · 100`.
    pub label: String,
    /// The grouping values as text, in [`SummarySpec::group_by`] order.
    pub keys: Vec<String>,
    /// Rows in the group.
    pub rows: usize,
    /// The metrics that have at least one value in the group, in [`ResultsSummary::metrics`]
    /// order.
    pub metrics: Vec<MetricStats>,
}

impl GroupSummary {
    /// This group's statistics for `metric`, if it has any value for it.
    pub fn stats(&self, metric: &str) -> Option<&MetricStats> {
        self.metrics.iter().find(|m| m.metric == metric)
    }
}

/// A summarised measurement: every group with its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsSummary {
    /// The report's heading.
    pub title: String,
    /// The files read, as given.
    pub sources: Vec<String>,
    /// The grouping fields.
    pub group_by: Vec<String>,
    /// The metrics summarised, in column order.
    pub metrics: Vec<String>,
    /// Lines read from all sources.
    pub rows_read: usize,
    /// Lines left out: a grouping field was missing, or their group has no value for any metric.
    pub rows_left_out: usize,
    /// Groups in the order their first row appears.
    pub groups: Vec<GroupSummary>,
    /// Paired differences from the baseline groups, when [`SummarySpec::against`] asked for them.
    pub differences: Option<Differences>,
    /// Each group's mean curve, per [`SummarySpec::curves`] entry, then each metric against
    /// [`SummarySpec::x`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curves: Vec<CurveSummary>,
}

/// Reads the JSONL files `sources` and summarises their lines as `spec` says.
///
/// Errors name the file and line: a malformed line, a metric field that holds something other
/// than a number or `null` (`null`, which is how NaN is written, counts as no value). Asking for
/// no group field, or for a metric no row has, is an error too, as is a file whose rows all lack
/// a grouping field.
pub fn summarize_files(sources: &[PathBuf], spec: &SummarySpec) -> Result<ResultsSummary> {
    if sources.is_empty() {
        return Err(GraftError::Input("give at least one results file (JSONL, one object per line)".into()));
    }
    let mut rows = Vec::new();
    for path in sources {
        for (line, obj) in crate::data::read_objects(path)? {
            rows.push(Row { path, line, obj });
        }
    }
    let mut summary = summarize(&rows, spec)?;
    summary.sources = sources.iter().map(|p| p.display().to_string()).collect();
    Ok(summary)
}

/// One line of a results file and where it came from.
pub(super) struct Row<'a> {
    pub(super) path: &'a Path,
    pub(super) line: usize,
    pub(super) obj: Map<String, Value>,
}

/// Rows with the same grouping values (as text, in `group_by` order).
pub(super) type Group<'r, 'a> = (Vec<String>, Vec<&'r Row<'a>>);

fn summarize(rows: &[Row<'_>], spec: &SummarySpec) -> Result<ResultsSummary> {
    if spec.group_by.is_empty() {
        return Err(GraftError::Input("group rows by at least one field (--by name)".into()));
    }

    let mut groups: Vec<Group<'_, '_>> = Vec::new();
    let mut left_out = 0;
    for row in rows {
        let keys: Option<Vec<String>> = spec.group_by.iter().map(|k| lookup(&row.obj, k).map(key_text)).collect();
        let Some(keys) = keys else {
            left_out += 1;
            continue;
        };
        match groups.iter_mut().find(|(k, _)| *k == keys) {
            Some((_, members)) => members.push(row),
            None => groups.push((keys, vec![row])),
        }
    }
    if groups.is_empty() {
        return Err(GraftError::Input(format!(
            "no row has every grouping field ({}); {} rows read",
            spec.group_by.join(", "),
            rows.len()
        )));
    }
    let metrics = if spec.metrics.is_empty() {
        numeric_fields(groups.iter().flat_map(|(_, members)| members.iter().copied()), &spec.group_by)
    } else {
        spec.metrics.clone()
    };
    if metrics.is_empty() {
        return Err(GraftError::Input(
            "the rows have no numeric field to summarise besides the grouping fields".into(),
        ));
    }

    let mut seen = vec![false; metrics.len()];
    let mut kept = Vec::with_capacity(groups.len());
    let mut summaries = Vec::with_capacity(groups.len());
    for (keys, members) in groups {
        let mut stats = Vec::new();
        for (m, metric) in metrics.iter().enumerate() {
            let mut values = Vec::new();
            for row in &members {
                if let Some(v) = metric_value(row, metric)? {
                    values.push(v);
                }
            }
            if let Some(s) = stats_of(metric, values) {
                seen[m] = true;
                stats.push(s);
            }
        }
        if stats.is_empty() {
            // Rows of another kind (a baseline line among per-seed runs, say): nothing to show.
            left_out += members.len();
            continue;
        }
        summaries.push(GroupSummary {
            label: keys.join(" · "),
            keys: keys.clone(),
            rows: members.len(),
            metrics: stats,
        });
        kept.push((keys, members));
    }
    if let Some(m) = seen.iter().position(|s| !s) {
        return Err(GraftError::Input(format!(
            "no grouped row has a value for metric `{}`; check its spelling (dotted paths reach into objects)",
            metrics[m]
        )));
    }
    let differences = match &spec.against {
        Some(baseline) => Some(super::paired::differences(&kept, &spec.group_by, baseline, &metrics)?),
        None => None,
    };
    let mut curves: Vec<CurveSummary> = spec.curves.iter().map(|c| summarize_curve(&kept, c)).collect::<Result<_>>()?;
    if let Some(x) = &spec.x {
        let at = spec.group_by.iter().position(|g| g == x).ok_or_else(|| {
            GraftError::Input(format!("--x `{x}` must be one of the --by fields ({})", spec.group_by.join(", ")))
        })?;
        curves.extend(super::curves::metric_lines(&summaries, (at, x), &metrics)?);
    }
    Ok(ResultsSummary {
        title: spec.title.clone(),
        sources: Vec::new(),
        group_by: spec.group_by.clone(),
        metrics,
        rows_read: rows.len(),
        rows_left_out: left_out,
        groups: summaries,
        differences,
        curves,
    })
}

/// The value of `path` (dotted) in `obj`, if every step exists.
pub(super) fn lookup<'v>(obj: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut v = obj.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// A grouping value as text: strings as they are, anything else as its JSON form.
pub(super) fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The number `row` holds at `metric`, `None` where the field is absent or `null`.
pub(super) fn metric_value(row: &Row<'_>, metric: &str) -> Result<Option<f64>> {
    match lookup(&row.obj, metric) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(GraftError::Input(format!(
            "{}:{}: metric `{metric}` must be a number, found {}",
            row.path.display(),
            row.line,
            crate::data::json_kind(other)
        ))),
    }
}

/// Every numeric leaf path of the rows in first-seen order (within a line, by name), except
/// `seed` and `exclude`.
fn numeric_fields<'r, 'a: 'r>(rows: impl Iterator<Item = &'r Row<'a>>, exclude: &[String]) -> Vec<String> {
    fn walk(prefix: &str, obj: &Map<String, Value>, out: &mut Vec<String>) {
        for (k, v) in obj {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                Value::Number(_) if !out.contains(&path) => out.push(path),
                Value::Object(inner) => walk(&path, inner, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for row in rows {
        walk("", &row.obj, &mut out);
    }
    out.retain(|p| p != "seed" && !exclude.contains(p));
    out
}

/// Statistics of `values`, `None` when there is none.
pub(super) fn stats_of(metric: &str, values: Vec<f64>) -> Option<MetricStats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(MetricStats { metric: metric.to_string(), n, mean, std, min, max, values })
}

/// A value with as many decimals as its size calls for: `3.459`, `0.2927`, `227.7`, `2492`.
pub(crate) fn number(v: f64, reference: f64) -> String {
    if !v.is_finite() {
        return super::cells::NOT_AVAILABLE.to_string();
    }
    let a = reference.abs();
    let decimals = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 0.1 || a == 0.0 {
        3
    } else {
        4
    };
    format!("{v:.decimals$}")
}

/// `mean ± std`, or the mean alone for a single value, with the mean's number of decimals.
pub(crate) fn mean_std(s: &MetricStats) -> String {
    match s.std {
        Some(sd) => format!("{} ± {}", number(s.mean, s.mean), number(sd, s.mean)),
        None => number(s.mean, s.mean),
    }
}

/// The summary as a Markdown section: heading, where the rows came from, and one table with a
/// row per group and a column per metric (`mean ± std`, `–` where the group has no value; a
/// metric some rows of a group lack shows its count as `(n)`).
pub fn summary_markdown(s: &ResultsSummary) -> String {
    let mut md = format!("# {}\n\n{}\n\n", s.title, provenance(s));
    markdown_rows(&mut md, &s.group_by.join(" · "), "rows", &s.groups, &s.metrics);
    if let Some(d) = &s.differences {
        md.push_str(&format!("\n## {}\n\n", differences_heading(d)));
        markdown_rows(&mut md, "group − baseline", "pairs", &d.groups, &s.metrics);
    }
    md
}

/// Appends a Markdown table: a row per group, a column per metric.
fn markdown_rows(md: &mut String, first: &str, count: &str, groups: &[GroupSummary], metrics: &[String]) {
    md.push_str(&format!("| {first} | {count} |"));
    for m in metrics {
        md.push_str(&format!(" {m} |"));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(metrics.len()));
    md.push('\n');
    for g in groups {
        md.push_str(&format!("| {} | {} |", g.label, g.rows));
        for m in metrics {
            md.push_str(&format!(" {} |", cell(g, m)));
        }
        md.push('\n');
    }
}

/// `Paired differences from start = base (pairs by seed)`.
pub(crate) fn differences_heading(d: &Differences) -> String {
    format!(
        "Paired differences from {} = {} (rows paired by {})",
        d.baseline.field, d.baseline.value, d.baseline.pair_on
    )
}

/// One table cell: `mean ± std`, with `(n)` when the group has fewer values than rows.
pub(crate) fn cell(g: &GroupSummary, metric: &str) -> String {
    match g.stats(metric) {
        None => "–".to_string(),
        Some(st) if st.n < g.rows => format!("{} ({})", mean_std(st), st.n),
        Some(st) => mean_std(st),
    }
}

/// One sentence on the sources, the grouping and the statistics.
pub(crate) fn provenance(s: &ResultsSummary) -> String {
    let names: Vec<String> = s
        .sources
        .iter()
        .map(|p| Path::new(p).file_name().map_or_else(|| p.clone(), |f| f.to_string_lossy().into_owned()))
        .collect();
    let mut text = format!("From {} ({} rows", names.join(", "), s.rows_read);
    if s.rows_left_out > 0 {
        text.push_str(&format!(
            ", {} left out: without every grouping field or without any of the metrics",
            s.rows_left_out
        ));
    }
    text.push_str(&format!(
        "), grouped by {}. Each cell is the mean ± sample standard deviation over the group's rows.",
        s.group_by.join(", ")
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[&str]) -> Vec<Row<'static>> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| Row { path: Path::new("r.jsonl"), line: i + 1, obj: serde_json::from_str(l).unwrap() })
            .collect()
    }

    fn spec(by: &[&str], metrics: &[&str]) -> SummarySpec {
        SummarySpec {
            curves: Vec::new(),
            x: None,
            title: "t".into(),
            group_by: by.iter().map(|s| s.to_string()).collect(),
            metrics: metrics.iter().map(|s| s.to_string()).collect(),
            against: None,
        }
    }

    #[test]
    fn groups_in_first_seen_order_with_sample_std() {
        let r = rows(&[
            r#"{"start":"base","labels":100,"seed":1,"rouge1":0.2,"p":{"steps":4}}"#,
            r#"{"start":"cpt","labels":100,"seed":1,"rouge1":0.3}"#,
            r#"{"start":"base","labels":100,"seed":2,"rouge1":0.4,"p":{"steps":6}}"#,
            r#"{"name":"forgetting","loss":1.0}"#,
            r#"{"start":"none","labels":0}"#,
        ]);
        let s = summarize(&r, &spec(&["start", "labels"], &[])).unwrap();
        // The forgetting row has no group, so its `loss` is not a metric; fields sort by name.
        assert_eq!(s.metrics, vec!["p.steps", "rouge1"]);
        assert_eq!((s.rows_read, s.rows_left_out), (5, 2));
        assert_eq!(s.groups.iter().map(|g| g.label.as_str()).collect::<Vec<_>>(), ["base · 100", "cpt · 100"]);
        let base = s.groups[0].stats("rouge1").unwrap();
        assert!((base.mean - 0.3).abs() < 1e-12);
        assert!((base.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12, "{:?}", base.std);
        assert_eq!((base.min, base.max, base.n), (0.2, 0.4, 2));
        assert_eq!(s.groups[1].stats("rouge1").unwrap().std, None);
        assert!(s.groups[1].stats("p.steps").is_none());
        let md = summary_markdown(&s);
        assert!(md.contains("| base · 100 | 2 | 5.000 ± 1.414 | 0.300 ± 0.141 |"), "{md}");
        assert!(md.contains("| cpt · 100 | 1 | – | 0.300 |"), "{md}");
    }

    #[test]
    fn null_is_no_value_and_partial_groups_show_their_count() {
        let r = rows(&[r#"{"name":"a","x":1.0}"#, r#"{"name":"a","x":null}"#]);
        let s = summarize(&r, &spec(&["name"], &["x"])).unwrap();
        assert_eq!(s.groups[0].stats("x").unwrap().n, 1);
        assert_eq!(cell(&s.groups[0], "x"), "1.000 (1)");
    }

    #[test]
    fn bad_requests_are_named() {
        let r = rows(&[r#"{"name":"a","lr":"5e-4","x":1}"#, r#"{"name":"b","x":2}"#]);
        let err = summarize(&r, &spec(&["name"], &["lr"])).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:1: metric `lr` must be a number, found a string"), "{err}");
        let err = summarize(&r, &spec(&["name"], &["y"])).unwrap_err().to_string();
        assert!(err.contains("metric `y`"), "{err}");
        let err = summarize(&r, &spec(&["label"], &["x"])).unwrap_err().to_string();
        assert!(err.contains("no row has every grouping field (label)"), "{err}");
        assert!(summarize(&r, &spec(&[], &["x"])).is_err());
    }

    #[test]
    fn numbers_keep_the_digits_that_matter() {
        assert_eq!(number(3.458415, 3.45), "3.458");
        assert_eq!(number(0.0123, 0.05), "0.0123");
        assert_eq!(number(227.738, 227.7), "227.7");
        assert_eq!(number(2492.19, 2492.0), "2492");
        assert_eq!(number(f64::NAN, 1.0), "n/a");
    }
}
