//! The comparison as one self-contained HTML page: inline CSS, the results table, the learning
//! curve table and the three charts as inline SVG. The page loads nothing (no script, image,
//! font or style sheet from elsewhere), so it opens the same offline, from a mail attachment or
//! from a CI artifact.

use super::cells::{self, CURVE_COLUMNS, RESULT_COLUMNS};
use super::{plots, CompareReport};
use crate::Result;

/// Layout and typography of the page; system fonts only.
pub(super) const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d1d1f;
       background: #fff; margin: 2rem auto; max-width: 960px; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; white-space: nowrap; }
td.desc { color: #444; font-size: 0.9rem; }
figure { margin: 1rem 0; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.9rem; }
";

/// Renders `r` as a complete HTML document.
///
/// Every string taken from the report is HTML-escaped; the charts come from `plots`, whose
/// text plotters escapes, and are inlined without their XML namespace declaration (an HTML
/// parser places `<svg>` in the SVG namespace itself), so the page contains no URL at all.
pub fn html_report(r: &CompareReport) -> Result<String> {
    let loss = plots::loss_curves_svg(r)?;
    let bars = plots::metric_bars_svg(r)?;
    let curve = plots::learning_curve_svg(r)?;

    let mut h = String::with_capacity(loss.len() + bars.len() + curve.as_ref().map_or(0, String::len) + 8192);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!("<title>graft compare: {}</title>\n", escape(&r.task)));
    h.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));

    h.push_str(&format!("<h1>Technique comparison: {}</h1>\n", escape(&r.task)));
    h.push_str(&format!(
        "<p class=\"meta\">model <code>{}</code> · n_train {} · n_test {}",
        escape(&r.model),
        cells::count(r.n_train),
        cells::count(r.n_test)
    ));
    if !r.labels.is_empty() {
        let labels: Vec<String> = r.labels.iter().map(|l| escape(l)).collect();
        h.push_str(&format!(" · labels: {}", labels.join(", ")));
    }
    h.push_str("</p>\n");

    h.push_str("<h2>Results</h2>\n<table id=\"results\">\n<thead><tr>");
    for c in RESULT_COLUMNS.iter().chain(std::iter::once(&"what was done")) {
        h.push_str(&format!("<th>{}</th>", escape(c)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for t in &r.rows {
        let row = cells::result_cells(t);
        h.push_str(&format!("<tr><td>{}</td>", escape(&row[0])));
        for cell in &row[1..] {
            h.push_str(&format!("<td class=\"num\">{}</td>", escape(cell)));
        }
        h.push_str(&format!("<td class=\"desc\">{}</td></tr>\n", escape(&t.description)));
    }
    h.push_str("</tbody>\n</table>\n");
    if r.rows.is_empty() {
        h.push_str("<p>No technique ran.</p>\n");
    }

    figure(&mut h, "loss-curves", "Training loss", &loss, "Training loss per optimizer step (or epoch for heads trained in epochs); techniques that do not train are not drawn.");
    figure(
        &mut h,
        "metric-bars",
        "Accuracy and macro-F1",
        &bars,
        &format!("Scores on the {} held-out examples.", cells::count(r.n_test)),
    );

    if !r.learning_curve.is_empty() {
        h.push_str("<h2>Learning curve</h2>\n<table id=\"learning-curve\">\n<thead><tr>");
        for c in CURVE_COLUMNS {
            h.push_str(&format!("<th>{}</th>", escape(c)));
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for p in &r.learning_curve {
            let row = cells::curve_cells(p);
            h.push_str(&format!("<tr><td>{}</td>", escape(&row[0])));
            for cell in &row[1..] {
                h.push_str(&format!("<td class=\"num\">{}</td>", escape(cell)));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
    }
    if let Some(svg) = &curve {
        figure(
            &mut h,
            "learning-curve-plot",
            "",
            svg,
            "Held-out scores after training on a share of the train split (log axis).",
        );
    }

    h.push_str("<p class=\"meta\">Written by <code>graft compare</code>; the same numbers are in compare.json and compare.md.</p>\n");
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// Appends a `<figure>` holding `svg` inline, under an `<h2>` heading when `heading` is not empty.
pub(super) fn figure(h: &mut String, id: &str, heading: &str, svg: &str, caption: &str) {
    if !heading.is_empty() {
        h.push_str(&format!("<h2>{}</h2>\n", escape(heading)));
    }
    h.push_str(&format!("<figure id=\"{}\">\n", escape(id)));
    h.push_str(&inline_svg(svg, caption));
    h.push_str(&format!("<figcaption>{}</figcaption>\n</figure>\n", escape(caption)));
}

/// Prepares a standalone SVG document for inlining: the namespace declaration (a URL that HTML
/// does not need) is replaced by an accessible label.
fn inline_svg(svg: &str, label: &str) -> String {
    let labelled = format!(" role=\"img\" aria-label=\"{}\"", escape(label));
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", &labelled, 1)
}

/// Escapes text for HTML content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn inlined_svg_has_no_namespace_url() {
        let svg = "<svg width=\"1\" height=\"1\" viewBox=\"0 0 1 1\" xmlns=\"http://www.w3.org/2000/svg\">\n</svg>\n";
        let inl = inline_svg(svg, "a <chart>");
        assert!(!inl.contains("http"), "{inl}");
        assert!(
            inl.starts_with(
                "<svg width=\"1\" height=\"1\" viewBox=\"0 0 1 1\" role=\"img\" aria-label=\"a &lt;chart&gt;\">"
            ),
            "{inl}"
        );
    }
}
