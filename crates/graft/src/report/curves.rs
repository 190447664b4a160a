//! Learning curves in a results file: a row may hold a curve — an array of points, each an
//! object with an x and a y field (a game run's `curve` of `{episodes, mean_return}` per update)
//! — and a group's curve is the mean over its rows point by point (the k-th point of every row),
//! with the sample standard deviation of y. Drawn as one line per group with a ±1 std band,
//! one chart per value of the first grouping field when there are several (a chart per target,
//! a line per method).

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;

use super::plots::{self, FONT, TITLE_ROOM, WIDTH};
use super::summary::{lookup, Group};
use crate::{GraftError, Result};

/// Which field holds a curve and which keys of its points are x and y.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurveSpec {
    /// The array field (dotted path).
    pub field: String,
    /// The x key of a point.
    pub x: String,
    /// The y key of a point.
    pub y: String,
}

impl FromStr for CurveSpec {
    type Err = GraftError;

    /// `FIELD:X:Y`, as `curve:episodes:mean_return`.
    fn from_str(s: &str) -> Result<Self> {
        match s.split(':').collect::<Vec<_>>()[..] {
            [field, x, y] if [field, x, y].iter().all(|p| !p.is_empty()) => {
                Ok(Self { field: field.into(), x: x.into(), y: y.into() })
            }
            _ => Err(GraftError::Input(format!(
                "a curve is FIELD:X:Y (the array field and its points' x and y keys, as curve:episodes:mean_return), got `{s}`"
            ))),
        }
    }
}

/// One point of a group's mean curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveStats {
    /// Mean x of the rows' k-th points.
    pub x: f64,
    /// Mean y.
    pub mean: f64,
    /// Sample standard deviation of y; `None` with one row.
    pub std: Option<f64>,
    /// Rows that have a k-th point.
    pub n: usize,
}

/// A group's mean curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCurve {
    /// The group's label (its grouping values joined with ` · `).
    pub label: String,
    /// The grouping values.
    pub keys: Vec<String>,
    /// Point by point, as long as the longest row's curve.
    pub points: Vec<CurveStats>,
}

/// Every group's mean curve for one [`CurveSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSummary {
    /// What was read.
    pub spec: CurveSpec,
    /// The groups that have the curve, in summary order.
    pub groups: Vec<GroupCurve>,
    /// Whether the points are groups' means at the values of a grouping field (`--x`: `spec`'s
    /// field and y are the metric) rather than curves held in the rows.
    #[serde(default)]
    pub across_groups: bool,
}

/// The mean curves of `groups` for `spec`; a curve that is not an array of objects with numeric
/// x and y is an error naming the file and line, and so is a curve no row has.
pub(super) fn summarize_curve(groups: &[Group<'_, '_>], spec: &CurveSpec) -> Result<CurveSummary> {
    let mut out = Vec::new();
    for (keys, rows) in groups {
        let mut curves = Vec::new();
        for row in rows {
            let Some(value) = lookup(&row.obj, &spec.field) else { continue };
            let bad = |what: &str| {
                GraftError::Input(format!("{}:{}: curve `{}` {what}", row.path.display(), row.line, spec.field))
            };
            let points = value.as_array().ok_or_else(|| bad("must be an array of points"))?;
            let number = |p: &Value, key: &str| p.get(key).and_then(Value::as_f64);
            let curve = points
                .iter()
                .map(|p| number(p, &spec.x).zip(number(p, &spec.y)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(&format!("has a point without numbers at `{}` and `{}`", spec.x, spec.y)))?;
            curves.push(curve);
        }
        if curves.is_empty() {
            continue;
        }
        let longest = curves.iter().map(Vec::len).max().unwrap_or(0);
        let points = (0..longest)
            .map(|k| {
                let at: Vec<(f64, f64)> = curves.iter().filter_map(|c| c.get(k).copied()).collect();
                let n = at.len() as f64;
                let x = at.iter().map(|p| p.0).sum::<f64>() / n;
                let mean = at.iter().map(|p| p.1).sum::<f64>() / n;
                let std =
                    (at.len() > 1).then(|| (at.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
                CurveStats { x, mean, std, n: at.len() }
            })
            .collect();
        out.push(GroupCurve { label: keys.join(" · "), keys: keys.clone(), points });
    }
    if out.is_empty() {
        return Err(GraftError::Input(format!("no grouped row has a curve at `{}`", spec.field)));
    }
    Ok(CurveSummary { spec: spec.clone(), groups: out, across_groups: false })
}

/// Each metric of `groups` drawn against the numeric grouping field at `x` (its index in the
/// grouping fields): a line per combination of the other grouping values, through the groups'
/// means, sorted by x; the band is the groups' standard deviation. A group whose x value is not
/// a number is an error naming it.
pub(super) fn metric_lines(
    groups: &[super::summary::GroupSummary],
    x: (usize, &str),
    metrics: &[String],
) -> Result<Vec<CurveSummary>> {
    let (at, x_field) = x;
    let mut out = Vec::new();
    for metric in metrics {
        let mut lines: Vec<GroupCurve> = Vec::new();
        for g in groups {
            let text = &g.keys[at];
            let x = text.parse::<f64>().map_err(|_| {
                GraftError::Input(format!("--x `{x_field}` must hold numbers; group `{}` has `{text}`", g.label))
            })?;
            let Some(st) = g.stats(metric) else { continue };
            let keys: Vec<String> =
                g.keys.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, k)| k.clone()).collect();
            let point = CurveStats { x, mean: st.mean, std: st.std, n: st.n };
            match lines.iter_mut().find(|l| l.keys == keys) {
                Some(line) => line.points.push(point),
                None => lines.push(GroupCurve { label: keys.join(" · "), keys, points: vec![point] }),
            }
        }
        for line in &mut lines {
            line.points.sort_by(|a, b| a.x.total_cmp(&b.x));
        }
        let spec = CurveSpec { field: metric.clone(), x: x_field.to_string(), y: metric.clone() };
        out.push(CurveSummary { spec, groups: lines, across_groups: true });
    }
    Ok(out)
}

/// The charts of `curves`: one per value of the first grouping value when groups have several
/// (its lines named by the other values), else one; each with its heading.
pub fn curve_charts(curves: &CurveSummary) -> Result<Vec<(String, String)>> {
    let split = curves.groups.iter().any(|g| g.keys.len() > 1);
    let mut panels: Vec<(String, Vec<&GroupCurve>)> = Vec::new();
    for g in &curves.groups {
        let panel = if split { g.keys[0].clone() } else { String::new() };
        match panels.iter_mut().find(|(p, _)| *p == panel) {
            Some((_, members)) => members.push(g),
            None => panels.push((panel, vec![g])),
        }
    }
    let spec = &curves.spec;
    panels
        .into_iter()
        .map(|(panel, members)| {
            let heading = match panel.as_str() {
                "" => format!("{} against {}", spec.y, spec.x),
                p => format!("{p}: {} against {}", spec.y, spec.x),
            };
            let lines: Vec<(String, &GroupCurve)> = members
                .into_iter()
                .map(|g| (if split { g.keys[1..].join(" · ") } else { g.label.clone() }, g))
                .collect();
            Ok((heading.clone(), curve_svg(&heading, spec, &lines)?))
        })
        .collect()
}

/// One chart: a line per group at the mean, a band at ± one standard deviation.
fn curve_svg(heading: &str, spec: &CurveSpec, lines: &[(String, &GroupCurve)]) -> Result<String> {
    let band = |p: &CurveStats| (p.mean - p.std.unwrap_or(0.0), p.mean + p.std.unwrap_or(0.0));
    let points = || lines.iter().flat_map(|(_, g)| g.points.iter()).filter(|p| plots::plottable(p.mean));
    // x values over two or more orders of magnitude (label fractions 0.01 to 1) are drawn on a
    // log scale: positions are log10(x), ticks read x.
    let (lo, hi) = (points().map(|p| p.x).fold(f64::INFINITY, f64::min), points().map(|p| p.x).fold(0.0, f64::max));
    let log = lo > 0.0 && hi / lo >= 50.0;
    let at = |x: f64| if log { x.log10() } else { x };
    let x_desc = if log { format!("{} (log scale)", spec.x) } else { spec.x.clone() };
    let (x0, x1) = plots::span(points().map(|p| at(p.x)), 0.0);
    let (y0, y1) = plots::span(points().flat_map(|p| [band(p).0, band(p).1]), 0.05);
    plots::render("learning curves", (WIDTH, 460), |root| {
        plots::title(root, heading)?;
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_top(TITLE_ROOM)
            .margin_right(32)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc(spec.y.as_str())
            .x_label_formatter(&|v| plots::axis_number(if log { 10f64.powf(*v) } else { *v }))
            .y_label_formatter(&|v| plots::axis_number(*v))
            .max_light_lines(4)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style((FONT, 13))
            .draw()?;
        for (i, (name, g)) in lines.iter().enumerate() {
            let (r, gr, b) = plots::technique_color(i);
            let colour = RGBColor(r, gr, b);
            let shown: Vec<&CurveStats> = g.points.iter().filter(|p| plots::plottable(p.mean)).collect();
            let mut outline: Vec<(f64, f64)> = shown.iter().map(|p| (at(p.x), band(p).1)).collect();
            outline.extend(shown.iter().rev().map(|p| (at(p.x), band(p).0)));
            chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.15).filled())))?;
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(shown.iter().map(|p| (at(p.x), p.mean)), style).point_size(3))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        plots::legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}
