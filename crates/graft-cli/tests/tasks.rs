//! `graft data build appstream` and the argument and input errors of `graft eval summarize` /
//! `graft eval qa` (all caught before a model is loaded).

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = graft(args);
    assert!(out.status.success(), "graft {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], want: &str) {
    let out = graft(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "graft {args:?} succeeded");
    assert!(err.contains(want), "graft {args:?}: expected `{want}` in:\n{err}");
}

const SAMPLE: &str = "---\nFile: DEP-11\nVersion: '0.16'\n---\nType: desktop-application\nID: org.example.Maps\n\
Name:\n  C: Maps\n  de: Karten\nSummary:\n  C: Find places around the world\nDescription:\n  C: <p>Maps shows maps &amp; routes.</p><ul><li>offline</li></ul>\n\
ProjectLicense: GPL-2.0+\n---\nType: addon\nID: empty\nName:\n  C: Empty\nSummary:\n  C: No description\n";

fn sample_yaml(dir: &Path, n: usize) -> String {
    let mut yaml = SAMPLE.to_string();
    for i in 0..n {
        yaml.push_str(&format!(
            "---\nType: desktop-application\nID: app{i}\nName:\n  C: App {i}\nSummary:\n  C: Edits file {i}\nDescription:\n  C: \"<p>App {i} edits file {i}.</p>\"\n"
        ));
    }
    let path = dir.join("Components-amd64.yml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn builds_appstream_files_with_answers_in_context() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_yaml(dir.path(), 30);
    let out = dir.path().join("data");
    let json = ok(&[
        "data",
        "build",
        "appstream",
        "--appstream",
        &src,
        "--out",
        out.to_str().unwrap(),
        "--test-fraction",
        "0.25",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["n_components"], 31);
    assert_eq!(report["skipped"]["empty_description"], 1);
    assert_eq!(report["n_without_license"], 30);
    let files = &report["files"];
    let (train, test) =
        (files["summarize.train.jsonl"].as_u64().unwrap(), files["summarize.test.jsonl"].as_u64().unwrap());
    assert_eq!(train + test, 31);
    let mut n_qa = 0;
    for split in ["train", "test"] {
        let text = std::fs::read_to_string(out.join(format!("qa.{split}.jsonl"))).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let context: Vec<char> = v["context"].as_str().unwrap().chars().collect();
            let answer = v["answers"]["text"][0].as_str().unwrap();
            let start = v["answers"]["answer_start"][0].as_u64().unwrap() as usize;
            let at: String = context[start..start + answer.chars().count()].iter().collect();
            assert_eq!(at, answer, "{line}");
            n_qa += 1;
        }
    }
    assert_eq!(n_qa, 32, "a summary question per component and a license question for Maps");
    let lines = std::fs::read_to_string(out.join("summarize.train.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["messages"][1]["role"], "assistant");

    fails(
        &["data", "build", "appstream", "--appstream", "/nonexistent/c.yml.gz", "--out", out.to_str().unwrap()],
        "/nonexistent/c.yml.gz",
    );
    fails(
        &["data", "build", "appstream", "--appstream", &src, "--out", out.to_str().unwrap(), "--test-fraction", "2"],
        "test fraction",
    );
}

#[test]
fn builds_from_the_real_apt_lists_when_present() {
    let lists = std::fs::read_dir("/var/lib/apt/lists").map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
    let has_appstream =
        lists.is_ok_and(|names| names.iter().any(|n| n.to_string_lossy().contains("dep11_Components-")));
    let why = "no AppStream metadata in /var/lib/apt/lists (Debian: apt-get install appstream, then apt-get update)";
    if !common::require(has_appstream, why) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = ok(&["data", "build", "appstream", "--out", dir.path().to_str().unwrap(), "--max", "50", "--json"]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["n_components"], 50);
    assert!(report["files"]["qa.train.jsonl"].as_u64().unwrap() >= 40);
}

#[test]
fn eval_argument_and_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_yaml(dir.path(), 12);
    let out = dir.path().join("data");
    ok(&["data", "build", "appstream", "--appstream", &src, "--out", out.to_str().unwrap(), "--test-fraction", "0.5"]);
    let sum = out.join("summarize.test.jsonl");
    let qa = out.join("qa.test.jsonl");
    let (sum, qa) = (sum.to_str().unwrap(), qa.to_str().unwrap());
    for task in ["summarize", "qa"] {
        let data = if task == "qa" { qa } else { sum };
        fails(&["eval", task, "--data", data, "--limit", "0"], "--limit must be at least 1");
        fails(&["eval", task, "--data", data, "--max-new-tokens", "0"], "--max-new-tokens must be at least 1");
        fails(&["eval", task, "--data", "/nonexistent/x.jsonl"], "no such file");
        fails(&["eval", task, "--data", "dataset:appstream/nope.jsonl"], "no file `nope.jsonl`");
        fails(
            &["eval", task, "--data", data, "--adapter", dir.path().to_str().unwrap()],
            "adapter_config.json is missing",
        );
        fails(&["eval", task], "--data");
        let help = ok(&["eval", task, "--help"]);
        assert!(help.contains("Example"));
    }
    // Every line skipped: the report names the skips, no model is loaded.
    let bad_qa = dir.path().join("bad_qa.jsonl");
    std::fs::write(
        &bad_qa,
        "{\"context\": \"abc\", \"question\": \"q\", \"answers\": {\"text\": [\"zzz\"], \"answer_start\": [0]}}\n",
    )
    .unwrap();
    fails(&["eval", "qa", "--data", bad_qa.to_str().unwrap()], "no usable questions (1 lines, 1 skipped)");
    let bad_sum = dir.path().join("bad_sum.jsonl");
    std::fs::write(&bad_sum, "{\"document\": \"\", \"summary\": \"s\"}\n").unwrap();
    fails(&["eval", "summarize", "--data", bad_sum.to_str().unwrap()], "no usable pairs (1 lines, 1 skipped)");
    // A malformed line names file:line.
    std::fs::write(&bad_qa, "{\"context\": \"abc\", \"question\": \"q\", \"answers\": {\"text\": [\"a\"]}}\n{oops\n")
        .unwrap();
    fails(&["eval", "qa", "--data", bad_qa.to_str().unwrap()], &format!("{}:2: not valid JSON", bad_qa.display()));
    std::fs::write(&bad_sum, "\n{\"summary\": \"s\"}\n").unwrap();
    fails(
        &["eval", "summarize", "--data", bad_sum.to_str().unwrap()],
        &format!("{}:2: missing field `document`", bad_sum.display()),
    );
}

#[test]
fn data_help_has_examples() {
    for args in [
        &["data", "--help"][..],
        &["data", "build", "--help"],
        &["data", "build", "appstream", "--help"],
        &["data", "build", "speech", "--help"],
    ] {
        assert!(ok(args).contains("Example"), "{args:?}");
    }
}

/// `graft data build speech` refuses an unknown language before it reads or writes anything.
#[test]
fn speech_build_refuses_unknown_languages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("speech");
    let args = ["data", "build", "speech", "--out", out.to_str().unwrap(), "--appstream", "/nonexistent/c.yml"];
    fails(
        &[&args[..], &["--languages", "de,xx"]].concat(),
        "unknown language `xx`: the speech data knows de, en, es, fr, it, pt",
    );
    assert!(!out.exists());
}

/// `graft eval classify --json` scores a held-out chat file by label scoring: one prediction per
/// line, counted in the confusion matrix, and a malformed line is an error naming it.
#[test]
fn eval_classify_reports_accuracy_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let line = |text: &str, label: &str| {
        serde_json::json!({"messages": [
            {"role": "user", "content": format!("Is the sentiment of this tweet negative, neutral or positive?\n\n{text}")},
            {"role": "assistant", "content": label},
        ]})
        .to_string()
    };
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        [line("great day!", "positive"), line("awful delay", "negative"), line("at gate 5", "neutral")].join("\n"),
    )
    .unwrap();
    let json = ok(&["eval", "classify", "--data", good.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["n"], 3);
    assert_eq!(report["labels"], serde_json::json!(["negative", "neutral", "positive"]));
    let counted: u64 = report["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3);
    let acc = report["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc) && (acc * 3.0 - (acc * 3.0).round()).abs() < 1e-9, "{acc}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"messages\": 3}}\n", line("fine", "neutral"))).unwrap();
    fails(&["eval", "classify", "--data", bad.to_str().unwrap()], "bad.jsonl:2");
}
