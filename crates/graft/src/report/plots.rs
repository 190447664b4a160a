//! SVG charts of a comparison, drawn with plotters' SVG backend: training loss per step, held-out
//! accuracy and macro-F1 per technique, and the learning curve.
//!
//! Text is written as SVG `<text>` elements and laid out with plotters' built-in width estimate,
//! so no font file is read. Values that are NaN, infinite or beyond ±1e100 are left out of every
//! chart (a line skips the point, a bar is replaced by `n/a`); axis ranges are built from the
//! values that remain, so a diverged run never makes drawing fail.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{cells, CompareReport};
use crate::{GraftError, Result};

/// One colour per technique (the Tableau-10 set), by row index, in every chart.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Bar colours of the metric chart: accuracy dark, macro-F1 light, the same for every technique.
const ACCURACY_BAR: RGBColor = RGBColor(55, 90, 140);
const MACRO_F1_BAR: RGBColor = RGBColor(140, 180, 220);

/// Colour of a chart's message when there is nothing to draw.
const NOTE_GREY: RGBColor = RGBColor(90, 90, 90);

/// Width of every chart, in pixels.
pub(super) const WIDTH: u32 = 900;
pub(super) const FONT: &str = "sans-serif";
/// Room above the plotting area for the title (and the bar chart's legend).
pub(super) const TITLE_ROOM: u32 = 44;

pub(super) type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;
pub(super) type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// One technique's learning curve: colour index, name, (share, accuracy, macro-F1) by share.
type Curve<'a> = (usize, &'a str, Vec<(f64, f64, f64)>);

/// The colour technique number `i` (its index in [`CompareReport::rows`]) is drawn in, as RGB.
///
/// Learning-curve techniques that have no row take the colours after the last row's.
pub fn technique_color(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

/// Training loss against step, one line per technique that recorded losses, with a legend.
///
/// Techniques without losses (prompting) are not drawn; when no technique trained, the chart
/// says so instead. A technique whose losses are all non-finite is named in a note under the
/// plot. Steps are drawn as recorded (no smoothing).
pub fn loss_curves_svg(r: &CompareReport) -> Result<String> {
    let trained: Vec<_> = r.rows.iter().enumerate().filter(|(_, t)| !t.losses.is_empty()).collect();
    let mut lines = Vec::new();
    let mut unplottable = Vec::new();
    for (i, t) in &trained {
        let points: Vec<(f64, f64)> =
            t.losses.iter().filter(|p| plottable(p.loss)).map(|p| (p.step as f64, p.loss)).collect();
        if points.is_empty() {
            unplottable.push(t.technique.as_str());
        } else {
            lines.push((*i, t.technique.as_str(), points));
        }
    }

    render("loss curves", (WIDTH, 460), |root| {
        title(root, "Training loss per step")?;
        if lines.is_empty() {
            let msg = if trained.is_empty() {
                "No technique trained: there are no loss curves to show.".to_string()
            } else {
                format!("No finite loss values to show ({}).", unplottable.join(", "))
            };
            return centered_note(root, &msg);
        }
        let all = lines.iter().flat_map(|(_, _, p)| p.iter());
        let (x0, x1) = span(all.clone().map(|p| p.0), 0.0);
        let (y0, y1) = span(all.map(|p| p.1), 0.05);
        let bottom = if unplottable.is_empty() { 0 } else { 24 };
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_top(TITLE_ROOM)
            .margin_bottom(8 + bottom)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|v| axis_number(*v))
            .max_light_lines(4)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style((FONT, 13))
            .draw()?;
        for (i, name, points) in &lines {
            let (cr, cg, cb) = technique_color(*i);
            let style = RGBColor(cr, cg, cb).stroke_width(2);
            // A single point is drawn as a dot: a one-point line would be invisible.
            let dot = if points.len() == 1 { 3 } else { 0 };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style).point_size(dot))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        if !unplottable.is_empty() {
            let (_, h) = root.dim_in_pixel();
            let note = format!("Not drawn (no finite loss): {}", unplottable.join(", "));
            root.draw_text(&note, &text_style(13, HPos::Left, VPos::Bottom), (16, h as i32 - 8))?;
        }
        Ok(())
    })
}

/// Held-out accuracy and macro-F1 as horizontal bars, two per technique, in report order from
/// the top, each labelled with its value.
pub fn metric_bars_svg(r: &CompareReport) -> Result<String> {
    let n = r.rows.len();
    let names: Vec<String> = r.rows.iter().map(|t| shorten(&t.technique, 32)).collect();
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let name_room = (longest as u32 * 8 + 24).clamp(72, 290);
    let height = TITLE_ROOM + 80 + 46 * n.max(1) as u32;

    render("metric bars", (WIDTH, height), |root| {
        title(root, "Held-out accuracy and macro-F1")?;
        if n == 0 {
            return centered_note(root, "No technique results to show.");
        }
        bar_legend(root)?;
        let rows = n as f64;
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_top(TITLE_ROOM)
            .x_label_area_size(44)
            .y_label_area_size(name_room)
            .build_cartesian_2d(0.0..1.12, 0.0..rows)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(7)
            .x_label_formatter(&|v| if *v <= 1.0 + 1e-9 { format!("{v:.1}") } else { String::new() })
            .x_desc("score")
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style((FONT, 13))
            .draw()?;
        let value_style = text_style(12, HPos::Left, VPos::Center);
        let name_style = text_style(14, HPos::Right, VPos::Center);
        for (i, t) in r.rows.iter().enumerate() {
            // Row 0 at the top: its band is [rows - 1, rows].
            let top = rows - i as f64;
            let bars =
                [(t.accuracy, top - 0.12, top - 0.5, ACCURACY_BAR), (t.macro_f1, top - 0.5, top - 0.88, MACRO_F1_BAR)];
            for (value, y_hi, y_lo, color) in bars {
                let mid = (y_hi + y_lo) / 2.0;
                if !value.is_finite() {
                    chart.draw_series(std::iter::once(Text::new(
                        cells::NOT_AVAILABLE,
                        (0.0, mid),
                        value_style.clone(),
                    )))?;
                    continue;
                }
                let v = value.clamp(0.0, 1.0);
                chart.draw_series(std::iter::once(Rectangle::new([(0.0, y_lo), (v, y_hi)], color.filled())))?;
                chart.draw_series(std::iter::once(
                    EmptyElement::at((v, mid)) + Text::new(cells::score(value), (4, 0), value_style.clone()),
                ))?;
            }
            let (px, py) = chart.backend_coord(&(0.0, top - 0.5));
            root.draw_text(&names[i], &name_style, (px - 8, py))?;
        }
        Ok(())
    })
}

/// Accuracy (left) and macro-F1 (right) against the share of the train split on a log axis, one
/// line per technique, or `None` when the report has no learning-curve points.
pub fn learning_curve_svg(r: &CompareReport) -> Result<Option<String>> {
    if r.learning_curve.is_empty() {
        return Ok(None);
    }
    // Techniques in report-row order first, then any that only appear in the curve.
    let mut order: Vec<&str> = r.rows.iter().map(|t| t.technique.as_str()).collect();
    for p in &r.learning_curve {
        if !order.contains(&p.technique.as_str()) {
            order.push(&p.technique);
        }
    }
    let curves: Vec<Curve<'_>> = order
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let mut pts: Vec<(f64, f64, f64)> = r
                .learning_curve
                .iter()
                .filter(|p| p.technique == *name && plottable(p.fraction) && p.fraction > 0.0)
                .map(|p| (p.fraction, p.accuracy, p.macro_f1))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!pts.is_empty()).then_some((i, *name, pts))
        })
        .collect();

    let svg = render("learning curve", (WIDTH, 440), |root| {
        title(root, "Learning curve: held-out score against share of the train split")?;
        if curves.is_empty() {
            return centered_note(root, "No learning-curve point has a valid train share.");
        }
        let mut shares: Vec<f64> = curves.iter().flat_map(|c| c.2.iter().map(|p| p.0)).collect();
        shares.sort_by(f64::total_cmp);
        shares.dedup();
        let (lo, hi) = (shares[0], shares[shares.len() - 1]);
        // Label the shares that were run; with many, every other one (logarithmic ticks crowd
        // near 100%).
        let step = shares.len().div_ceil(8);
        let ticks: Vec<f64> = shares.iter().copied().step_by(step).collect();
        // Log padding: a fifth of a decade on each side (shares are > 0, so both ends are too).
        let (x0, x1) = (lo / 1.6, hi * 1.6);
        let body = root.margin(TITLE_ROOM as i32 - 8, 0, 0, 0);
        let panels = body.split_evenly((1, 2));
        for (k, panel) in panels.iter().enumerate() {
            let metric = if k == 0 { "accuracy" } else { "macro-F1" };
            let pick = |p: &(f64, f64, f64)| if k == 0 { p.1 } else { p.2 };
            let values = curves.iter().flat_map(|c| c.2.iter().map(pick)).filter(|v| plottable(*v));
            let (v0, v1) = values.fold((0.0f64, 1.0f64), |(a, b), v| (a.min(v), b.max(v)));
            let mut chart = ChartBuilder::on(panel)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(52)
                .caption(metric, (FONT, 15))
                .build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks.clone()), v0..v1 + 0.02)?;
            chart
                .configure_mesh()
                .x_desc("share of train split (log)")
                .y_desc(metric)
                .x_label_formatter(&|v| cells::share(*v))
                .max_light_lines(1)
                .light_line_style(RGBColor(240, 240, 240))
                .label_style((FONT, 12))
                .draw()?;
            for (i, name, pts) in &curves {
                let (cr, cg, cb) = technique_color(*i);
                let style = RGBColor(cr, cg, cb).stroke_width(2);
                let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, pick(p))).filter(|p| plottable(p.1)).collect();
                let anno = chart.draw_series(LineSeries::new(line, style).point_size(3))?;
                if k == 0 {
                    anno.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
                }
            }
            if k == 0 {
                legend(&mut chart, SeriesLabelPosition::LowerRight)?;
            }
        }
        Ok(())
    })?;
    Ok(Some(svg))
}

/// Draws on a white canvas of `size` and returns the SVG document; plotting errors become
/// [`GraftError::Plot`] naming `chart`.
pub(super) fn render(
    chart: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&Root<'_>) -> DrawResult,
) -> Result<String> {
    let fail = |e: DrawingAreaErrorKind<std::io::Error>| GraftError::Plot { chart, reason: e.to_string() };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        draw(&root).map_err(fail)?;
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// An axis label: whole numbers without decimals, others with at most four (a tick at
/// 0.6000000000000001 reads 0.6).
pub(super) fn axis_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A value a chart can place: finite and within ±1e100, so that axis spans stay finite.
pub(super) fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= 1e100
}

/// The range covering `values` (all plottable), widened by `pad` of its width on each side; a
/// single value gets a unit-wide range around it, and no value gives `0..1`.
pub(super) fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let width = hi - lo;
    if width <= f64::EPSILON * lo.abs().max(1.0) {
        let half = (lo.abs() * 0.1).max(0.5);
        return (lo - half, hi + half);
    }
    (lo - width * pad, hi + width * pad)
}

/// A text style of `size` pixels anchored at `h`/`v`.
pub(super) fn text_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, v))
}

/// The chart title, bold, top left.
pub(super) fn title(root: &Root<'_>, text: &str) -> DrawResult {
    let style = TextStyle::from((FONT, 18, FontStyle::Bold).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
    root.draw_text(text, &style, (16, 12))
}

/// A message in the middle of an otherwise empty chart.
pub(super) fn centered_note(root: &Root<'_>, text: &str) -> DrawResult {
    let (w, h) = root.dim_in_pixel();
    let style = text_style(16, HPos::Center, VPos::Center).color(&NOTE_GREY);
    root.draw_text(text, &style, (w as i32 / 2, (h as i32 + TITLE_ROOM as i32) / 2))
}

/// The series legend in a framed, slightly transparent box.
pub(super) fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT, 13))
        .draw()
}

/// The bar chart's key, top right beside the title.
fn bar_legend(root: &Root<'_>) -> DrawResult {
    let (w, _) = root.dim_in_pixel();
    let style = text_style(13, HPos::Left, VPos::Center);
    let mut x = w as i32 - 220;
    for (label, color) in [("accuracy", ACCURACY_BAR), ("macro-F1", MACRO_F1_BAR)] {
        root.draw(&Rectangle::new([(x, 14), (x + 14, 28)], color.filled()))?;
        root.draw_text(label, &style, (x + 20, 21))?;
        x += 110;
    }
    Ok(())
}

/// `s` cut to `max` characters with an ellipsis, so that a long name cannot push the plot away.
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_stay_finite_and_wide() {
        assert_eq!(span([1.0, 3.0].into_iter(), 0.0), (1.0, 3.0));
        assert_eq!(span([2.0].into_iter(), 0.0), (1.5, 2.5));
        assert_eq!(span(std::iter::empty(), 0.1), (0.0, 1.0));
        let (lo, hi) = span([-1e100, 1e100].into_iter(), 0.05);
        assert!(lo.is_finite() && hi.is_finite() && lo < hi);
        assert!(!plottable(f64::NAN) && !plottable(f64::INFINITY) && !plottable(1e101));
    }

    #[test]
    fn axis_numbers_drop_float_noise() {
        let got: Vec<String> = [0.6000000000000001, 250.0, -0.2, 0.125, -550.0].map(axis_number).to_vec();
        assert_eq!(got, ["0.6", "250", "-0.2", "0.125", "-550"]);
    }
}
