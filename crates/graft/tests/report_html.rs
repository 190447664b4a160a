//! The comparison report's renderers on a hand-built report: the Markdown table text, the JSON
//! round trip, the SVG charts parsed as XML, the self-contained HTML page, and — when a
//! Chromium-family browser is installed — the page rendered headless: its DOM holds the table rows
//! and the charts, and a screenshot shows the plotted lines in their colours.
//!
//! The browser is `$GRAFT_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
//! `google-chrome` on PATH. Without one the browser test prints a `SKIPPED` note and returns,
//! except in CI (`CI=true`) or with `GRAFT_REQUIRE_BROWSER=1`, where a missing browser fails it
//! (`.ci/run` installs Debian's `chromium`).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use graft::report::{
    html_report, learning_curve_svg, loss_curves_svg, markdown_table, metric_bars_svg, technique_color, write_report,
    CompareReport, CurvePoint, LossPoint, TechniqueResult,
};

/// Losses `start / sqrt(step)` for steps 1..=n.
fn losses(n: u64, start: f64) -> Vec<LossPoint> {
    (1..=n).map(|step| LossPoint { step, loss: start / (step as f64).sqrt() }).collect()
}

fn row(technique: &str, accuracy: f64, macro_f1: f64, params: usize, losses: Vec<LossPoint>) -> TechniqueResult {
    TechniqueResult {
        technique: technique.into(),
        description: format!("{technique} on the sentiment task"),
        accuracy,
        macro_f1,
        trainable_params: params,
        train_time_s: if losses.is_empty() { 0.0 } else { 245.4 },
        eval_time_s: 8.31,
        peak_rss_mb: Some(700.0),
        losses,
    }
}

/// Three techniques, one prompting (no losses, RSS unknown) and two trained with different
/// numbers of steps, plus a three-point learning curve for the trained ones.
fn sample() -> CompareReport {
    let mut zero_shot = row("zero_shot", 0.6131, 0.5873, 0, vec![]);
    zero_shot.peak_rss_mb = None;
    let mut lora = row("lora", 0.875, 0.8712, 460_800, losses(7, 2.0));
    lora.eval_time_s = 0.4249;
    lora.peak_rss_mb = Some(1023.6);
    let probe = row("linear_probe", 0.8, 0.7964, 1_154, losses(5, 0.9));
    let mut curve = Vec::new();
    for (name, base) in [("lora", 0.6), ("linear_probe", 0.55)] {
        for (k, fraction) in [0.1, 0.3, 1.0].into_iter().enumerate() {
            let accuracy = base + 0.1 * k as f64;
            curve.push(CurvePoint {
                technique: name.into(),
                fraction,
                n_train: (1200.0 * fraction).round() as usize,
                accuracy,
                macro_f1: accuracy - 0.01,
            });
        }
    }
    CompareReport {
        task: "sentiment".into(),
        model: "smollm2-135m-instruct".into(),
        n_train: 1200,
        n_test: 400,
        labels: vec!["negative".into(), "positive".into()],
        rows: vec![zero_shot, lora, probe],
        learning_curve: curve,
    }
}

/// `#RRGGBB` of technique `i`, as plotters writes colours.
fn hex(i: usize) -> String {
    let (r, g, b) = technique_color(i);
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// Every `<polyline>` of an SVG document: (stroke colour, number of points).
fn polylines(svg: &str) -> Vec<(String, usize)> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .map(|n| {
            let stroke = n.attribute("stroke").unwrap_or("").to_ascii_uppercase();
            let points = n.attribute("points").unwrap_or("").split_whitespace().count();
            (stroke, points)
        })
        .collect()
}

/// The text of every `<text>` element of an SVG document, trimmed (plotters puts it on a line
/// of its own).
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(|n| {
            n.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect::<String>().trim().to_string()
        })
        .collect()
}

/// Data lines (more than the two points of a legend sample or an axis) drawn in technique `i`'s
/// colour, as point counts.
fn lines_of(lines: &[(String, usize)], i: usize) -> Vec<usize> {
    lines.iter().filter(|(stroke, n)| *stroke == hex(i) && *n > 2).map(|(_, n)| *n).collect()
}

#[test]
fn markdown_has_header_rows_and_learning_curve() {
    let r = sample();
    let md = markdown_table(&r);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "# Technique comparison: sentiment");
    assert!(md.contains("model: smollm2-135m-instruct · n_train: 1,200 · n_test: 400"), "{md}");
    assert!(
        md.contains("| technique | accuracy | macro-F1 | trainable params | train time | eval time | peak RSS |"),
        "{md}"
    );
    let lora = lines.iter().find(|l| l.starts_with("| lora |")).expect("a lora row");
    assert_eq!(*lora, "| lora | 0.875 | 0.871 | 460,800 | 4 min 05 s | 0.42 s | 1,024 MB |");
    let zero = lines.iter().find(|l| l.starts_with("| zero_shot |")).expect("a zero_shot row");
    assert!(zero.ends_with("| 0 | 0.00 s | 8.3 s | n/a |"), "{zero}");
    // Three result rows, then the learning curve: its own header and one row per point.
    assert_eq!(lines.iter().filter(|l| l.starts_with("| ")).count(), 1 + 3 + 1 + r.learning_curve.len());
    assert!(md.contains("## Learning curve"));
    assert!(md.contains("| lora | 30% | 360 | 0.700 | 0.690 |"), "{md}");
    assert!(md.contains("- **lora**: lora on the sentiment task"), "{md}");
}

#[test]
fn markdown_escapes_cell_breaking_text_and_omits_an_empty_curve() {
    let mut r = sample();
    r.learning_curve.clear();
    r.rows[1].technique = "lora|r=8\nsecond line".into();
    let md = markdown_table(&r);
    let row = md.lines().find(|l| l.starts_with("| lora")).expect("the renamed row");
    // Seven cells: eight unescaped pipes.
    let b = row.as_bytes();
    let unescaped = (0..b.len()).filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\')).count();
    assert_eq!(unescaped, 8, "{row}");
    assert!(row.starts_with("| lora\\|r=8 second line |"), "{row}");
    assert!(!md.contains("Learning curve"));
}

#[test]
fn json_round_trips_and_files_are_written_whole() {
    let r = sample();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report");
    let files = write_report(&r, &out).unwrap();
    assert_eq!(files.markdown, out.join("compare.md"));
    assert_eq!(files.json, out.join("compare.json"));
    assert_eq!(files.html, out.join("report.html"));

    let json = std::fs::read_to_string(&files.json).unwrap();
    assert!(json.contains("\n  \"task\": \"sentiment\""), "pretty-printed: {json}");
    let back: CompareReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(std::fs::read_to_string(&files.markdown).unwrap(), markdown_table(&r));
    assert_eq!(std::fs::read_to_string(&files.html).unwrap(), html_report(&r).unwrap());

    // Writing again replaces the files and leaves no temporary file behind.
    let mut changed = r.clone();
    changed.rows[1].accuracy = 0.9;
    write_report(&changed, &out).unwrap();
    let again: CompareReport = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    assert_eq!(again, changed);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["compare.json", "compare.md", "report.html"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.html).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "report readable by others: {mode:o}");
    }
}

#[test]
fn loss_chart_has_one_line_per_trained_technique_and_a_legend() {
    let r = sample();
    let svg = loss_curves_svg(&r).unwrap();
    let lines = polylines(&svg);
    assert!(lines_of(&lines, 0).is_empty(), "zero_shot did not train: {lines:?}");
    assert_eq!(lines_of(&lines, 1), [7], "lora: one line of 7 steps");
    assert_eq!(lines_of(&lines, 2), [5], "linear_probe: one line of 5 steps");
    let data_lines = lines.iter().filter(|(_, n)| *n > 2).count();
    assert_eq!(data_lines, 2, "{lines:?}");
    let texts = texts(&svg);
    for name in ["lora", "linear_probe"] {
        assert!(texts.iter().any(|t| t == name), "legend names {name}: {texts:?}");
    }
    assert!(!texts.iter().any(|t| t == "zero_shot"), "{texts:?}");
}

#[test]
fn loss_chart_says_so_when_nothing_trained() {
    let mut r = sample();
    r.rows.retain(|t| t.losses.is_empty());
    let svg = loss_curves_svg(&r).unwrap();
    assert!(polylines(&svg).iter().all(|(_, n)| *n <= 2));
    let texts = texts(&svg);
    assert!(texts.iter().any(|t| t.contains("No technique trained")), "{texts:?}");
}

#[test]
fn non_finite_values_are_skipped_not_fatal() {
    let mut r = sample();
    r.rows[1].losses[2].loss = f64::NAN;
    r.rows[1].losses[4].loss = f64::INFINITY;
    r.rows[2].accuracy = f64::NAN;
    r.rows[2].train_time_s = f64::NEG_INFINITY;
    r.rows.push(row("full", f64::INFINITY, 0.5, 134_515_008, vec![LossPoint { step: 1, loss: f64::NAN }]));
    r.learning_curve[0].fraction = f64::NAN;
    r.learning_curve[1].accuracy = f64::NAN;

    let loss = loss_curves_svg(&r).unwrap();
    let lines = polylines(&loss);
    assert_eq!(lines_of(&lines, 1), [5], "the two non-finite lora losses are left out");
    assert!(lines_of(&lines, 3).is_empty());
    assert!(texts(&loss).iter().any(|t| t.contains("Not drawn (no finite loss): full")), "{:?}", texts(&loss));

    let bars = metric_bars_svg(&r).unwrap();
    assert_eq!(texts(&bars).iter().filter(|t| *t == "n/a").count(), 2, "{:?}", texts(&bars));

    let curve = learning_curve_svg(&r).unwrap().expect("curve points remain");
    let lines = polylines(&curve);
    // lora keeps two valid shares, one of them with a NaN accuracy: one point in the accuracy
    // panel, two in the macro-F1 panel, and its two-point legend sample.
    let mut lora: Vec<usize> = lines.iter().filter(|(s, _)| *s == hex(1)).map(|(_, n)| *n).collect();
    lora.sort();
    assert_eq!(lora, [1, 2, 2], "{lines:?}");
    assert_eq!(lines_of(&lines, 2), [3, 3], "linear_probe is untouched");

    let md = markdown_table(&r);
    let probe = md.lines().find(|l| l.starts_with("| linear_probe |")).unwrap();
    assert!(probe.starts_with("| linear_probe | n/a | 0.796 | 1,154 | n/a |"), "{probe}");
    html_report(&r).unwrap();
    write_report(&r, tempfile::tempdir().unwrap().path()).unwrap();
}

#[test]
fn metric_bars_name_every_technique_with_its_scores() {
    let r = sample();
    let svg = metric_bars_svg(&r).unwrap();
    let texts = texts(&svg);
    for t in &r.rows {
        assert!(texts.contains(&t.technique), "{}: {texts:?}", t.technique);
    }
    for value in ["0.875", "0.871", "0.800", "0.796", "0.613", "0.587"] {
        assert!(texts.iter().any(|s| s == value), "{value}: {texts:?}");
    }
    for key in ["accuracy", "macro-F1"] {
        assert!(texts.iter().any(|s| s == key), "{key}: {texts:?}");
    }
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let filled_bars = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "rect")
        .filter(|n| n.attribute("fill").is_some_and(|f| f != "none" && !f.eq_ignore_ascii_case("#FFFFFF")))
        .count();
    assert_eq!(filled_bars, 2 * r.rows.len() + 2, "two bars per technique and two legend keys");
}

#[test]
fn learning_curve_has_a_line_per_technique_and_panel_or_is_absent() {
    let r = sample();
    let svg = learning_curve_svg(&r).unwrap().expect("curve points");
    let lines = polylines(&svg);
    assert_eq!(lines_of(&lines, 1), [3, 3], "lora: accuracy and macro-F1 panels");
    assert_eq!(lines_of(&lines, 2), [3, 3], "linear_probe: accuracy and macro-F1 panels");
    let texts = texts(&svg);
    for name in ["lora", "linear_probe"] {
        assert!(texts.iter().any(|t| t == name), "legend names {name}: {texts:?}");
    }
    for share in ["10%", "30%", "100%"] {
        assert!(texts.iter().any(|t| t == share), "a tick at each share that was run, {share}: {texts:?}");
    }

    let mut empty = r.clone();
    empty.learning_curve.clear();
    assert!(learning_curve_svg(&empty).unwrap().is_none());
    assert_eq!(html_report(&empty).unwrap().matches("<svg").count(), 2);
}

#[test]
fn html_is_self_contained_and_escaped() {
    let mut r = sample();
    let html = html_report(&r).unwrap();
    let lower = html.to_ascii_lowercase();
    for external in ["http://", "https://", "src=", "href=", "url(", "@import", "<link", "<script"] {
        assert!(!lower.contains(external), "the page references {external}");
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 3);
    assert_eq!(html.matches("<tr>").count(), 1 + r.rows.len() + 1 + r.learning_curve.len());
    assert!(html.contains("<td>lora</td><td class=\"num\">0.875</td><td class=\"num\">0.871</td>"), "{html}");

    r.rows[1].technique = "<script>alert(1)</script>".into();
    r.model = "a & b \"quoted\"".into();
    let html = html_report(&r).unwrap();
    assert!(!html.to_ascii_lowercase().contains("<script"), "unescaped name");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("a &amp; b &quot;quoted&quot;"));
}

// ---------------------------------------------------------------------------------------------
// Headless browser

/// How long one browser run may take before it is killed.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

/// The browser to use: `$GRAFT_CHROMIUM` (which must exist when set), else the first known
/// name on PATH.
fn find_browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GRAFT_CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "GRAFT_CHROMIUM={} is not a file", p.display());
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Runs the browser headless on `page` with `extra` flags and a fresh profile under `work`,
/// killing its whole process group after [`BROWSER_LIMIT`]; returns stdout.
fn run_browser(browser: &Path, work: &Path, tag: &str, page: &Path, extra: &[String]) -> String {
    let profile = work.join(format!("profile-{tag}"));
    let stdout_path = work.join(format!("{tag}.stdout"));
    let stderr_path = work.join(format!("{tag}.stderr"));
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    // Files, not pipes: helper processes that outlive the browser cannot block the test.
    .stdout(File::create(&stdout_path).unwrap())
    .stderr(File::create(&stderr_path).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", browser.display()));
    let started = Instant::now();
    let status: Option<ExitStatus> = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > BROWSER_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kill_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let tail: String =
        stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let status =
        status.unwrap_or_else(|| panic!("{tag}: browser still running after {BROWSER_LIMIT:?}; killed\n{tail}"));
    assert!(status.success(), "{tag}: browser exited with {status}\n{tail}");
    eprintln!("{tag}: browser finished in {:.1} s", started.elapsed().as_secs_f64());
    std::fs::read_to_string(&stdout_path).unwrap()
}

/// Ends the browser's helper processes too: they share its process group.
#[cfg(unix)]
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid only sends a signal to that process group, which is the
    // browser this test started (its own group, from `process_group(0)`).
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: u32) {}

/// Decodes an 8-bit RGB or RGBA PNG into (width, height, RGB pixels).
fn decode_png(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().expect("screenshot size fits in memory")];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "screenshot bit depth");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("screenshot colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()].chunks_exact(channels).map(|p| [p[0], p[1], p[2]]).collect();
    (info.width, info.height, pixels)
}

#[test]
fn headless_browser_renders_tables_and_charts() {
    let browser = find_browser();
    let why = "no browser found (set GRAFT_CHROMIUM, or put chromium, chromium-browser or google-chrome on PATH; \
               on Debian: apt-get install chromium)";
    let required = std::env::var("GRAFT_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(browser.is_some() || !required, "GRAFT_REQUIRE_BROWSER=1 but {why}");
    if !common::require(browser.is_some(), why) {
        return;
    }
    let browser = browser.unwrap();
    let r = sample();
    let work = tempfile::tempdir().unwrap();
    let files = write_report(&r, &work.path().join("report")).unwrap();
    let page = files.html.canonicalize().unwrap();

    // The DOM the browser built: table rows and inline SVG elements, not text.
    let dom = run_browser(&browser, work.path(), "dom", &page, &["--dump-dom".to_string()]);
    assert!(dom.contains("<table id=\"results\">"), "no results table in the DOM:\n{dom}");
    for t in &r.rows {
        assert!(dom.contains(&format!("<tr><td>{}</td>", t.technique)), "no row for {} in the DOM", t.technique);
    }
    assert!(dom.contains("<td class=\"num\">460,800</td>"), "lora's parameter count");
    assert_eq!(dom.matches("<svg").count(), 3, "three charts in the DOM");
    assert!(dom.matches("<polyline").count() >= 2 + 4, "loss and learning-curve lines in the DOM");
    assert!(!dom.contains("&lt;svg"), "SVG shown as text");

    // The pixels: each trained technique's line colour is on screen, and a fair share of the
    // page is drawn.
    let shot = work.path().join("shot.png");
    run_browser(
        &browser,
        work.path(),
        "screenshot",
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let (w, h, pixels) = decode_png(&shot);
    assert_eq!((w, h), (1200, 1600), "screenshot size");
    let close =
        |p: &[u8; 3], c: (u8, u8, u8)| p[0].abs_diff(c.0) <= 16 && p[1].abs_diff(c.1) <= 16 && p[2].abs_diff(c.2) <= 16;
    for (i, t) in r.rows.iter().enumerate().filter(|(_, t)| !t.losses.is_empty()) {
        let n = pixels.iter().filter(|p| close(p, technique_color(i))).count();
        assert!(n >= 300, "{}: only {n} pixels in its colour {:?}", t.technique, technique_color(i));
    }
    // Below the header and table (the top fifth), the charts cover the page.
    let plot_rows = &pixels[(w * h / 5) as usize..];
    let drawn = plot_rows.iter().filter(|p| p.iter().any(|&c| c < 225)).count();
    let colored = plot_rows.iter().filter(|p| p.iter().max().unwrap() - p.iter().min().unwrap() > 60).count();
    let (drawn, colored) = (drawn as f64 / plot_rows.len() as f64, colored as f64 / plot_rows.len() as f64);
    eprintln!("screenshot: {:.1}% drawn, {:.1}% coloured below the top fifth", drawn * 100.0, colored * 100.0);
    assert!(drawn > 0.03, "only {:.2}% of the plot area is drawn", drawn * 100.0);
    assert!(colored > 0.01, "only {:.2}% of the plot area is in colour", colored * 100.0);
}
