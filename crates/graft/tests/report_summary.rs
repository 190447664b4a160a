//! `graft report`'s summaries on a results file written the way the measurement scripts write
//! theirs: groups, sample statistics and paired differences against numbers worked out by hand,
//! the three files (JSON read back, SVG charts parsed as XML, a page that loads nothing), and
//! malformed input named by file and line.

use graft::report::{summarize_files, write_summary, Baseline, ResultsSummary, SummarySpec};
use std::path::PathBuf;

/// Two label budgets, runs with and without an extra stage, three seeds each (the seed-3 run of
/// `cpt · 100` is missing), plus a line of another kind that has no `start`.
const RESULTS: &str = r#"{"name":"forgetting_base","seed":0,"loss":{"domain":3.9}}
{"start":"base","labels":100,"seed":1,"rouge1":0.29,"eval_loss":3.46}
{"start":"cpt","labels":100,"seed":1,"rouge1":0.30,"eval_loss":3.32}
{"start":"base","labels":100,"seed":2,"rouge1":0.27,"eval_loss":3.43}
{"start":"cpt","labels":100,"seed":2,"rouge1":0.29,"eval_loss":3.29}
{"start":"base","labels":100,"seed":3,"rouge1":0.28,"eval_loss":null}
{"start":"base","labels":300,"seed":1,"rouge1":0.31,"eval_loss":3.1}
{"start":"cpt","labels":300,"seed":1,"rouge1":0.33,"eval_loss":3.0}
"#;

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn spec(against: bool) -> SummarySpec {
    SummarySpec {
        title: "Extra stage <before> LoRA".into(),
        group_by: vec!["start".into(), "labels".into()],
        metrics: vec!["rouge1".into(), "eval_loss".into()],
        against: against.then(|| Baseline { field: "start".into(), value: "base".into(), pair_on: "seed".into() }),
        curves: Vec::new(),
        x: None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn groups_statistics_and_paired_differences() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "results.jsonl", RESULTS);
    let s = summarize_files(std::slice::from_ref(&path), &spec(true)).unwrap();
    assert_eq!((s.rows_read, s.rows_left_out), (8, 1));
    let labels: Vec<&str> = s.groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["base · 100", "cpt · 100", "base · 300", "cpt · 300"]);

    let base = &s.groups[0];
    assert_eq!(base.rows, 3);
    let r = base.stats("rouge1").unwrap();
    assert!(close(r.mean, 0.28) && close(r.std.unwrap(), 0.01), "{r:?}");
    // The null loss of seed 3 is no value: two values.
    let l = base.stats("eval_loss").unwrap();
    assert_eq!((l.n, l.values.as_slice()), (2, &[3.46, 3.43][..]));

    let d = s.differences.as_ref().unwrap();
    let labels: Vec<&str> = d.groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["cpt · 100 − base · 100", "cpt · 300 − base · 300"]);
    // Seeds 1 and 2 pair up (cpt has no seed 3): rouge1 differences 0.01 and 0.02.
    let d100 = &d.groups[0];
    assert_eq!(d100.rows, 2);
    let dr = d100.stats("rouge1").unwrap();
    assert!(close(dr.mean, 0.015) && close(dr.std.unwrap(), 0.005f64.hypot(0.005)), "{dr:?}");
    let dl = d100.stats("eval_loss").unwrap();
    assert!(close(dl.mean, -0.14) && dl.std.unwrap() < 1e-12, "{dl:?}");
    assert_eq!(d.groups[1].stats("rouge1").unwrap().std, None);
}

#[test]
fn the_three_files_read_back_and_the_page_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "results.jsonl", RESULTS);
    let s = summarize_files(&[path], &spec(true)).unwrap();
    let out = dir.path().join("report");
    let files = write_summary(&s, &out).unwrap();

    // JSON numbers read back to within a unit in the last place (serde_json's fast float parser).
    let back: ResultsSummary = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    assert_eq!((&back.title, &back.metrics, back.rows_read), (&s.title, &s.metrics, s.rows_read));
    let all = |r: &ResultsSummary| {
        let d = r.differences.as_ref().unwrap();
        r.groups.iter().chain(&d.groups).flat_map(|g| g.metrics.clone()).collect::<Vec<_>>()
    };
    for (a, b) in all(&back).iter().zip(all(&s)) {
        assert_eq!((&a.metric, a.n, a.values.len()), (&b.metric, b.n, b.values.len()));
        assert!((a.mean - b.mean).abs() <= 1e-15 * b.mean.abs().max(1.0), "{a:?} {b:?}");
    }

    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("| base · 100 | 3 | 0.280 ± 0.010 | 3.445 ± 0.021 (2) |"), "{md}");
    assert!(md.contains("## Paired differences from start = base (rows paired by seed)"), "{md}");
    assert!(md.contains("| cpt · 100 − base · 100 | 2 | 0.0150 ± 0.0071 | -0.140 ± 0.000 |"), "{md}");

    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("<h1>Extra stage &lt;before&gt; LoRA</h1>"), "the title is escaped");
    assert!(!html.contains("http") && !html.contains("<script"), "the page loads nothing");
    // Two metrics, each with its chart and its difference chart; every chart is well-formed XML
    // with a bar (rect) per group that has the metric.
    let svgs: Vec<&str> =
        html.match_indices("<svg").map(|(i, _)| &html[i..i + html[i..].find("</svg>").unwrap() + 6]).collect();
    assert_eq!(svgs.len(), 4);
    for (svg, bars) in svgs.iter().zip([4, 2, 4, 2]) {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
        let filled =
            doc.descendants().filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#8CB4DC")).count();
        assert_eq!(filled, bars, "{svg}");
    }
}

#[test]
fn bad_input_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = file(&dir, "broken.jsonl", "{\"start\":\"base\",\"labels\":1,\"rouge1\":0.2}\n{\"start\": \n");
    let err = summarize_files(std::slice::from_ref(&broken), &spec(false)).unwrap_err().to_string();
    assert!(err.contains("broken.jsonl:2") && err.contains("not valid JSON"), "{err}");

    let text = file(&dir, "text.jsonl", "{\"start\":\"base\",\"labels\":1,\"rouge1\":\"high\"}\n");
    let err = summarize_files(&[text], &spec(false)).unwrap_err().to_string();
    assert!(err.contains("text.jsonl:1: metric `rouge1` must be a number, found a string"), "{err}");

    let twice = file(
        &dir,
        "twice.jsonl",
        "{\"start\":\"base\",\"labels\":1,\"seed\":1,\"rouge1\":0.2,\"eval_loss\":3}\n\
         {\"start\":\"cpt\",\"labels\":1,\"seed\":1,\"rouge1\":0.3}\n{\"start\":\"cpt\",\"labels\":1,\"seed\":1,\"rouge1\":0.4}\n",
    );
    let err = summarize_files(&[twice], &spec(true)).unwrap_err().to_string();
    assert!(err.contains("twice.jsonl:3: `seed` = 1 appears twice in one group"), "{err}");

    let empty = file(&dir, "empty.jsonl", "");
    assert!(summarize_files(&[empty], &spec(false)).unwrap_err().to_string().contains("no usable samples"));
    assert!(summarize_files(&[], &spec(false)).is_err());
}

#[test]
fn learning_curves_average_point_by_point_and_draw_a_chart_per_first_key() {
    use graft::report::CurveSpec;
    let rows = r#"{"pair":"long","method":"scratch","seed":1,"auc":1.0,"curve":[{"episodes":4,"mean_return":10},{"episodes":9,"mean_return":30}]}
{"pair":"long","method":"scratch","seed":2,"auc":2.0,"curve":[{"episodes":6,"mean_return":20},{"episodes":11,"mean_return":50},{"episodes":15,"mean_return":70}]}
{"pair":"long","method":"warm","seed":1,"auc":3.0,"curve":[{"episodes":2,"mean_return":400}]}
{"pair":"acro","method":"scratch","seed":1,"auc":4.0,"curve":[{"episodes":3,"mean_return":-500}]}
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "results.jsonl", rows);
    let curve: CurveSpec = "curve:episodes:mean_return".parse().unwrap();
    let spec = SummarySpec {
        title: "curves".into(),
        group_by: vec!["pair".into(), "method".into()],
        metrics: vec!["auc".into()],
        against: None,
        curves: vec![curve.clone()],
        x: None,
    };
    let s = summarize_files(std::slice::from_ref(&path), &spec).unwrap();
    let c = &s.curves[0];
    assert_eq!(
        c.groups.iter().map(|g| g.label.as_str()).collect::<Vec<_>>(),
        ["long · scratch", "long · warm", "acro · scratch"]
    );
    let p = &c.groups[0].points;
    assert_eq!(p.len(), 3, "as long as the longest run");
    assert!(close(p[0].x, 5.0) && close(p[0].mean, 15.0) && close(p[0].std.unwrap(), 50f64.sqrt()), "{:?}", p[0]);
    assert!(close(p[1].x, 10.0) && close(p[1].mean, 40.0) && p[1].n == 2);
    assert_eq!((p[2].x, p[2].mean, p[2].std, p[2].n), (15.0, 70.0, None, 1));

    // One chart per pair, a line and a band per method, in the page after the metric's chart.
    let files = write_summary(&s, &dir.path().join("report")).unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("<h2>Curves</h2>") && html.contains("long: mean_return against episodes"));
    let svgs: Vec<&str> =
        html.match_indices("<svg").map(|(i, _)| &html[i..i + html[i..].find("</svg>").unwrap() + 6]).collect();
    assert_eq!(svgs.len(), 1 + 2);
    let doc = roxmltree::Document::parse(svgs[1]).unwrap();
    let lines = doc.descendants().filter(|n| n.has_tag_name("polyline")).count();
    let bands = doc.descendants().filter(|n| n.has_tag_name("polygon")).count();
    assert!(lines >= 2 && bands == 2, "{lines} lines, {bands} bands");
    let back: ResultsSummary = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    assert_eq!(back.curves[0].groups[0].points.len(), 3);

    // Malformed curves are named by file and line; so is a spec that is not FIELD:X:Y.
    let bad = file(&dir, "bad.jsonl", "{\"pair\":\"a\",\"method\":\"b\",\"auc\":1,\"curve\":[{\"episodes\":1}]}\n");
    let err = summarize_files(&[bad], &spec).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:1") && err.contains("without numbers at `episodes` and `mean_return`"), "{err}");
    let err = "curve:episodes".parse::<CurveSpec>().unwrap_err().to_string();
    assert!(err.contains("FIELD:X:Y"), "{err}");
}

#[test]
fn a_metric_against_a_numeric_grouping_field_draws_a_line_per_other_group() {
    let rows = r#"{"method":"probe","fraction":0.1,"seed":1,"accuracy":0.80}
{"method":"probe","fraction":0.01,"seed":1,"accuracy":0.70}
{"method":"probe","fraction":0.01,"seed":2,"accuracy":0.74}
{"method":"full","fraction":1,"seed":1,"accuracy":0.95}
{"method":"full","fraction":0.01,"seed":1,"accuracy":0.75}
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "results.jsonl", rows);
    let mut spec = SummarySpec {
        title: "labels".into(),
        group_by: vec!["method".into(), "fraction".into()],
        metrics: vec!["accuracy".into()],
        against: None,
        curves: Vec::new(),
        x: Some("fraction".into()),
    };
    let s = summarize_files(std::slice::from_ref(&path), &spec).unwrap();
    let c = &s.curves[0];
    assert!(c.across_groups);
    assert_eq!((c.spec.x.as_str(), c.spec.y.as_str()), ("fraction", "accuracy"));
    let probe = &c.groups[0];
    assert_eq!(probe.label, "probe");
    let xs: Vec<f64> = probe.points.iter().map(|p| p.x).collect();
    assert_eq!(xs, [0.01, 0.1], "sorted by x");
    assert!(close(probe.points[0].mean, 0.72) && probe.points[0].n == 2);
    assert_eq!(c.groups[1].points.iter().map(|p| p.x).collect::<Vec<_>>(), [0.01, 1.0]);

    // Fractions over two orders of magnitude: a log axis, ticks in the field's own numbers.
    let html = std::fs::read_to_string(write_summary(&s, &dir.path().join("r")).unwrap().html).unwrap();
    assert!(html.contains("fraction (log scale)") && html.contains("accuracy against fraction"), "log axis");

    spec.x = Some("seed".into());
    let err = summarize_files(std::slice::from_ref(&path), &spec).unwrap_err().to_string();
    assert!(err.contains("--x `seed` must be one of the --by fields"), "{err}");
    spec.x = Some("method".into());
    let err = summarize_files(&[path], &spec).unwrap_err().to_string();
    assert!(err.contains("--x `method` must hold numbers") && err.contains("`probe`"), "{err}");
}
