//! `graft eval probe` and `graft eval retrieval` end to end with all-MiniLM-L6-v2 on real
//! tweets: a probe fits its own training tweets and reports held-out scores and the labelling of
//! unlabelled texts (shares and mean probabilities summing to 1); retrieval finds identical
//! texts first, never a shifted pairing's, and reads summarization files as pairs; bad lines
//! and unseen labels are named by file and line.

use graft::datasets::tweets::{self, Tweet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = graft(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn error_of(args: &[&str]) -> (Option<i32>, String) {
    let out = graft(args);
    assert!(!out.status.success(), "{args:?} should fail");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// 60 training and 30 held-out tweets (disjoint), distinct texts.
fn tweet_split() -> (Vec<Tweet>, Vec<Tweet>) {
    let all = tweets::read(&graft::assets::ensure("tweets", false).expect("tweets dataset")).unwrap();
    tweets::split(&all, 60, 30, 5)
}

fn write_lines(path: &Path, rows: impl IntoIterator<Item = serde_json::Value>) -> PathBuf {
    let lines: Vec<String> = rows.into_iter().map(|v| v.to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_path_buf()
}

fn labelled(path: &Path, ts: &[Tweet]) -> String {
    let rows = ts.iter().map(|t| serde_json::json!({"text": t.text, "label": tweets::LABELS[t.label]}));
    write_lines(path, rows).to_str().unwrap().to_string()
}

fn sum(map: &serde_json::Value) -> f64 {
    map.as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum()
}

#[test]
fn probe_fits_its_training_tweets_and_scores_unlabelled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = tweet_split();
    let train_file = labelled(&dir.path().join("train.jsonl"), &train);
    let test_file = labelled(&dir.path().join("test.jsonl"), &test);
    let texts = test.iter().map(|t| serde_json::json!({"text": t.text}));
    let score_file = write_lines(&dir.path().join("score.jsonl"), texts);

    // Scored on its own training tweets, the linear head separates them (measured: all right).
    let own = json_of(&[
        "eval",
        "probe",
        "--train",
        &train_file,
        "--test",
        &train_file,
        "--score",
        score_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!((own["n_train"].as_u64(), own["n_test"].as_u64()), (Some(60), Some(60)));
    assert_eq!(own["classes"], serde_json::json!(["negative", "neutral", "positive"]));
    assert!(own["accuracy"].as_f64().unwrap() >= 0.9, "training accuracy {}", own["accuracy"]);
    assert_eq!(own["model"], "all-minilm-l6-v2");
    let score = &own["score"];
    assert_eq!(score["n"], 30);
    assert!((sum(&score["predicted_share"]) - 1.0).abs() < 1e-9, "{score}");
    assert!((sum(&score["mean_probability"]) - 1.0).abs() < 1e-5, "{score}");
    for share in score["predicted_share"].as_object().unwrap().values() {
        // Each share is a count out of 30.
        let count = share.as_f64().unwrap() * 30.0;
        assert!((count - count.round()).abs() < 1e-9, "{score}");
    }

    // Held out, with an MLP head on the first 45 training tweets.
    let held = json_of(&[
        "eval",
        "probe",
        "--train",
        &train_file,
        "--test",
        &test_file,
        "--head",
        "mlp",
        "--hidden",
        "32",
        "--limit-train",
        "45",
        "--epochs",
        "10",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!((held["n_train"].as_u64(), held["n_test"].as_u64()), (Some(45), Some(30)));
    assert!(held["score"].is_null());
    let (acc, f1) = (held["accuracy"].as_f64().unwrap(), held["macro_f1"].as_f64().unwrap());
    assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&f1), "{held}");
    let per_class = held["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 3);
    assert_eq!(per_class.iter().map(|c| c["support"].as_u64().unwrap()).sum::<u64>(), 30);
    let mean_f1 = per_class.iter().map(|c| c["f1"].as_f64().unwrap()).sum::<f64>() / 3.0;
    assert!((mean_f1 - f1).abs() < 1e-12);
}

#[test]
fn probe_names_bad_lines_and_unseen_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = tweet_split();
    let train_file = labelled(&dir.path().join("train.jsonl"), &train);
    let mut rows = vec![
        serde_json::json!({"text": test[0].text, "label": "negative"}),
        serde_json::json!({"text": test[1].text, "label": "sarcastic"}),
    ];
    let unseen = write_lines(&dir.path().join("unseen.jsonl"), rows.clone());
    let (code, err) = error_of(&["eval", "probe", "--train", &train_file, "--test", unseen.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("unseen.jsonl:2: label `sarcastic` is not among the training labels"), "{err}");

    rows[1] = serde_json::json!({"text": test[1].text, "label": 2});
    let numeric = write_lines(&dir.path().join("numeric.jsonl"), rows);
    let (code, err) = error_of(&["eval", "probe", "--train", numeric.to_str().unwrap(), "--test", &train_file]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("numeric.jsonl:2: field `label` must be a string"), "{err}");

    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \n").unwrap();
    let (_, err) = error_of(&["eval", "probe", "--train", broken.to_str().unwrap(), "--test", &train_file]);
    assert!(err.contains("broken.jsonl:2:") && err.contains("not valid JSON"), "{err}");

    let (code, err) = error_of(&["eval", "probe", "--train", &train_file, "--test", &train_file, "--limit-train", "0"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("--limit-train must be at least 1"), "{err}");
}

#[test]
fn retrieval_finds_identical_texts_and_reads_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = tweet_split();
    let texts: Vec<&str> = train.iter().take(40).map(|t| t.text.as_str()).collect();
    let pairs = |target: &dyn Fn(usize) -> String| -> Vec<serde_json::Value> {
        (0..texts.len()).map(|i| serde_json::json!({"q": texts[i], "t": target(i)})).collect()
    };
    let fields = ["--query-field", "q", "--target-field", "t", "--json"];
    let run = |name: &str, rows: Vec<serde_json::Value>| {
        let file = write_lines(&dir.path().join(name), rows);
        let mut args = vec!["eval", "retrieval", "--data", file.to_str().unwrap()];
        args.extend(fields);
        json_of(&args)
    };

    // Each query's target is the query itself: always first.
    let same = run("same.jsonl", pairs(&|i| texts[i].to_string()));
    assert_eq!(same["n"], 40);
    for k in ["recall_at_1", "recall_at_5", "recall_at_10", "mrr"] {
        assert_eq!(same[k].as_f64(), Some(1.0), "{k}: {same}");
    }
    // Shifted by one: every query's identical text is another query's target and scores at
    // least as high as its own, so no query finds its target first.
    let shifted = run("shifted.jsonl", pairs(&|i| texts[(i + 1) % texts.len()].to_string()));
    assert_eq!(shifted["recall_at_1"].as_f64(), Some(0.0), "{shifted}");
    for k in ["recall_at_5", "recall_at_10", "mrr"] {
        let v = shifted[k].as_f64().unwrap();
        assert!((0.0..1.0).contains(&v), "{k}: {shifted}");
    }
    assert!(shifted["recall_at_5"].as_f64() <= shifted["recall_at_10"].as_f64());

    // Summarization lines (the user turn after the instruction is the document, the assistant
    // turn the summary) score exactly as the same texts given as pairs; an empty summary is skipped.
    let half = |i: usize| texts[i].split_whitespace().take(4).collect::<Vec<_>>().join(" ");
    let as_pairs = run("halves.jsonl", pairs(&half));
    let mut lines: Vec<serde_json::Value> = (0..texts.len())
        .map(|i| {
            let mut messages = graft::datasets::task_files::summarize_messages(texts[i]);
            messages.push(graft::tokenizer::Message { role: "assistant".into(), content: half(i) });
            serde_json::json!({ "messages": messages })
        })
        .collect();
    lines.push(serde_json::json!({"document": "a document", "summary": " "}));
    let summaries = write_lines(&dir.path().join("summaries.jsonl"), lines);
    let s = json_of(&["eval", "retrieval", "--data", summaries.to_str().unwrap(), "--format", "summaries", "--json"]);
    assert_eq!((s["n"].as_u64(), s["n_skipped"].as_u64()), (Some(40), Some(1)));
    for k in ["recall_at_1", "recall_at_5", "recall_at_10", "mrr"] {
        assert_eq!(s[k], as_pairs[k], "{k}");
    }
    assert!(as_pairs["recall_at_1"].as_f64().unwrap() > 0.5, "{as_pairs}");
    let limited = json_of(&[
        "eval",
        "retrieval",
        "--data",
        summaries.to_str().unwrap(),
        "--format",
        "summaries",
        "--limit",
        "10",
        "--json",
    ]);
    assert_eq!(limited["n"], 10);
}

#[test]
fn retrieval_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(
        &dir.path().join("pairs.jsonl"),
        [serde_json::json!({"query": "a", "target": "b"}), serde_json::json!({"query": "c", "answer": "d"})],
    );
    let (code, err) = error_of(&["eval", "retrieval", "--data", file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("pairs.jsonl:2: missing field `target`"), "{err}");
    let (_, err) = error_of(&["eval", "retrieval", "--data", file.to_str().unwrap(), "--limit", "0"]);
    assert!(err.contains("--limit must be at least 1"), "{err}");
    let missing = dir.path().join("nope.jsonl");
    let (_, err) = error_of(&["eval", "retrieval", "--data", missing.to_str().unwrap()]);
    assert!(err.contains("no such file"), "{err}");
}
