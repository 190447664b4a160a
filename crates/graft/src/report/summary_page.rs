//! A [`ResultsSummary`] as a self-contained HTML page (its table and one chart per metric: a bar
//! per group at the mean, the standard deviation as an error bar and every value as a dot), and
//! the three files `graft report` writes.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

use super::html::{escape, figure, STYLE};
use super::plots::{self, FONT, TITLE_ROOM, WIDTH};
use super::summary::{self, GroupSummary, ResultsSummary};
use super::ReportFiles;
use crate::Result;

/// Bar fill and the colour of error bars and value dots.
const BAR: RGBColor = RGBColor(140, 180, 220);
const INK: RGBColor = RGBColor(40, 60, 90);

/// Horizontal bars of `metric`, one per group that has a value for it, in summary order from the
/// top: the bar ends at the mean, a whisker spans mean ± std, dots mark the single values, and
/// the text right of it reads `mean ± std (n)`.
///
/// The bars start at zero (differences can point either way); values that are not finite are
/// left out.
pub fn metric_summary_svg(groups: &[GroupSummary], metric: &str, heading: &str) -> Result<String> {
    let groups: Vec<_> = groups.iter().filter_map(|g| g.stats(metric).map(|st| (g, st))).collect();
    let names: Vec<Vec<String>> = groups.iter().map(|(g, _)| label_lines(&g.label)).collect();
    let longest = names.iter().flatten().map(|n| n.chars().count()).max().unwrap_or(0);
    let name_room = (longest as u32 * 7 + 24).clamp(72, 330);
    let height = TITLE_ROOM + 70 + 40 * groups.len().max(1) as u32;

    let mut ends: Vec<f64> = Vec::new();
    for (_, st) in &groups {
        let sd = st.std.unwrap_or(0.0);
        ends.extend([st.mean - sd, st.mean + sd, st.min, st.max]);
    }
    ends.retain(|v| plots::plottable(*v));
    // Bars start at zero, so zero is always on the axis.
    ends.push(0.0);
    let (lo, hi) = plots::span(ends.iter().copied(), 0.04);
    // Room on the right for the value labels.
    let hi = hi + (hi - lo) * 0.28;
    let base = 0.0;

    plots::render("metric summary", (WIDTH, height), |root| {
        plots::title(root, heading)?;
        if groups.is_empty() {
            return plots::centered_note(root, "No group has a value for this metric.");
        }
        let rows = groups.len() as f64;
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_top(TITLE_ROOM)
            .x_label_area_size(40)
            .y_label_area_size(name_room)
            .build_cartesian_2d(lo..hi, 0.0..rows)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(8)
            .x_label_formatter(&|v| tick(*v, hi - lo))
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style((FONT, 13))
            .draw()?;
        let value_style = plots::text_style(12, HPos::Left, VPos::Center);
        let name_style = plots::text_style(14, HPos::Right, VPos::Center);
        for (i, (_, st)) in groups.iter().enumerate() {
            let top = rows - i as f64;
            let mid = top - 0.5;
            let (px, py) = chart.backend_coord(&(lo, mid));
            let lines = &names[i];
            for (l, line) in lines.iter().enumerate() {
                let dy = (2 * l as i32 + 1 - lines.len() as i32) * LINE_HEIGHT / 2;
                root.draw_text(line, &name_style, (px - 8, py + dy))?;
            }
            if !plots::plottable(st.mean) {
                chart.draw_series(std::iter::once(Text::new("n/a", (base, mid), value_style.clone())))?;
                continue;
            }
            chart.draw_series(std::iter::once(Rectangle::new(
                [(base, top - 0.82), (st.mean, top - 0.18)],
                BAR.filled(),
            )))?;
            let sd = st.std.filter(|v| plots::plottable(*v)).unwrap_or(0.0);
            if sd > 0.0 {
                let whisker = INK.stroke_width(2);
                let (a, b) = (st.mean - sd, st.mean + sd);
                chart.draw_series(std::iter::once(PathElement::new(vec![(a, mid), (b, mid)], whisker)))?;
                for x in [a, b] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, top - 0.32), (x, top - 0.68)],
                        whisker,
                    )))?;
                }
            }
            let dots =
                st.values.iter().filter(|v| plots::plottable(**v)).map(|v| Circle::new((*v, mid), 3, INK.filled()));
            chart.draw_series(dots)?;
            // Right of the whisker, the dots and the bar's zero end, so the text never covers them.
            let right = [st.mean + sd, st.max, base].into_iter().filter(|v| v.is_finite()).fold(st.mean, f64::max);
            let label = format!("{} (n {})", summary::mean_std(st), st.n);
            chart.draw_series(std::iter::once(
                EmptyElement::at((right, mid)) + Text::new(label, (8, 0), value_style.clone()),
            ))?;
        }
        Ok(())
    })
}

/// Characters of one line of a bar's name.
const LABEL_LINE: usize = 42;
/// Pixels between the lines of a two-line name.
const LINE_HEIGHT: i32 = 15;

/// A bar's name as one line, or as two when it is too long: a paired difference `A − B` is broken
/// before its `−`, anything else at the last word boundary that fits; each line is cut to
/// [`LABEL_LINE`] characters.
fn label_lines(label: &str) -> Vec<String> {
    if label.chars().count() <= LABEL_LINE {
        return vec![label.to_string()];
    }
    let (first, second) = match label.split_once(" − ") {
        Some((a, b)) => (a.to_string(), format!("− {b}")),
        None => {
            let fits: String = label.chars().take(LABEL_LINE).collect();
            match fits.rfind(' ') {
                Some(at) if at > 0 => (label[..at].to_string(), label[at + 1..].to_string()),
                _ => (fits.clone(), label.chars().skip(LABEL_LINE).collect()),
            }
        }
    };
    vec![plots::shorten(&first, LABEL_LINE), plots::shorten(&second, LABEL_LINE)]
}

/// An axis tick with as many decimals as an axis `width` wide needs, and no `-0`.
fn tick(v: f64, width: f64) -> String {
    let decimals = (1.0 - width.log10().floor()).clamp(0.0, 8.0) as usize;
    let text = format!("{v:.decimals$}");
    if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        "0".to_string()
    } else {
        text
    }
}

/// Renders `s` as a complete HTML document: heading, provenance, the table, then one chart per
/// metric. Like the comparison page it loads nothing from elsewhere.
pub fn summary_html(s: &ResultsSummary) -> Result<String> {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!("<title>graft report: {}</title>\n", escape(&s.title)));
    h.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    h.push_str(&format!("<h1>{}</h1>\n", escape(&s.title)));
    h.push_str(&format!("<p class=\"meta\">{}</p>\n", escape(&summary::provenance(s))));

    h.push_str("<h2>Results</h2>\n");
    html_rows(&mut h, "results", &s.group_by.join(" · "), "rows", &s.groups, &s.metrics);
    if let Some(d) = &s.differences {
        h.push_str(&format!("<h2>{}</h2>\n", escape(&summary::differences_heading(d))));
        html_rows(&mut h, "differences", "group − baseline", "pairs", &d.groups, &s.metrics);
    }
    for (i, metric) in s.metrics.iter().enumerate() {
        let svg = metric_summary_svg(&s.groups, metric, metric)?;
        let caption = format!(
            "{metric}: bars at the group mean, whiskers at ± one sample standard deviation, dots at the single values."
        );
        figure(&mut h, &format!("metric-{i}"), metric, &svg, &caption);
        if let Some(d) = &s.differences {
            let heading = format!("{metric}: difference from {} = {}", d.baseline.field, d.baseline.value);
            let svg = metric_summary_svg(&d.groups, metric, &heading)?;
            let caption = format!(
                "{metric}, group minus baseline for each {} both have: mean, ± one sample standard deviation, the single differences.",
                d.baseline.pair_on
            );
            figure(&mut h, &format!("difference-{i}"), "", &svg, &caption);
        }
    }
    for (c, curves) in s.curves.iter().enumerate() {
        for (k, (heading, svg)) in super::curves::curve_charts(curves)?.into_iter().enumerate() {
            let caption = if curves.across_groups {
                format!("{heading}: each point a group's mean, the band ± one sample standard deviation over its runs.")
            } else {
                format!(
                    "{heading}: each line the mean over a group's runs point by point (the k-th point of every run), the band ± one sample standard deviation."
                )
            };
            let first = if c + k == 0 { "Curves" } else { "" };
            figure(&mut h, &format!("curve-{c}-{k}"), first, &svg, &caption);
        }
    }
    h.push_str("<p class=\"meta\">Written by <code>graft report</code>; the same numbers are in report.json and report.md.</p>\n");
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// Appends an HTML table with the given id: a row per group, a column per metric.
fn html_rows(h: &mut String, id: &str, first: &str, count: &str, groups: &[GroupSummary], metrics: &[String]) {
    h.push_str(&format!("<table id=\"{id}\">\n<thead><tr><th>{}</th><th>{count}</th>", escape(first)));
    for m in metrics {
        h.push_str(&format!("<th>{}</th>", escape(m)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for g in groups {
        h.push_str(&format!("<tr><td>{}</td><td class=\"num\">{}</td>", escape(&g.label), g.rows));
        for m in metrics {
            h.push_str(&format!("<td class=\"num\">{}</td>", escape(&summary::cell(g, m))));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// Writes `report.md`, `report.json` and `report.html` for `s` into `dir` (created if missing),
/// each atomically and only after all three rendered, as [`super::write_report`] does.
pub fn write_summary(s: &ResultsSummary, dir: &Path) -> Result<ReportFiles> {
    let markdown = summary::summary_markdown(s);
    let mut json = serde_json::to_string_pretty(s)?;
    json.push('\n');
    let html = summary_html(s)?;
    super::write::write_files(dir, ["report.md", "report.json", "report.html"], [&markdown, &json, &html])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_break_into_two_lines() {
        assert_eq!(label_lines("heads · progressive · polarity"), ["heads · progressive · polarity"]);
        assert_eq!(
            label_lines("blocks · progressive · subjective − blocks · alone · subjective"),
            ["blocks · progressive · subjective", "− blocks · alone · subjective"]
        );
        let words = "one two three four five six seven eight nine ten eleven";
        assert_eq!(label_lines(words), ["one two three four five six seven eight", "nine ten eleven"]);
        let unbroken = "x".repeat(100);
        let lines = label_lines(&unbroken);
        assert_eq!((lines[0].chars().count(), lines[1].chars().count()), (42, 42));
        assert!(lines[1].ends_with('…'));
    }

    #[test]
    fn ticks_have_the_decimals_the_axis_needs() {
        assert_eq!(tick(-0.15, 0.2), "-0.15");
        assert_eq!(tick(-1e-17, 0.2), "0");
        assert_eq!(tick(0.3, 0.45), "0.30");
        assert_eq!(tick(2500.0, 4000.0), "2500");
        assert_eq!(tick(3.0, 4.6), "3.0");
    }
}
