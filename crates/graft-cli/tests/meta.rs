//! `graft meta` end to end with all-MiniLM-L6-v2 on a small labelled file: the summary (every
//! learner, the MAML family included, on the same meta-test episodes, disjoint class splits), the embeddings kept and read
//! back, a resumed finished run giving the same result, and a class too small for the episodes
//! refused by name before anything is embedded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

const TOPICS: [&str; 9] =
    ["astronomy", "chess", "music", "email", "photos", "weather", "cooking", "chemistry", "fonts"];

/// A `{"text", "label"}` file of `per` short texts for each topic (the last topic gets
/// `last` instead), and a tiny 3-way 1-shot 2-query config over it.
fn setup(dir: &Path, per: usize, last: usize) -> PathBuf {
    let mut lines = Vec::new();
    for (k, topic) in TOPICS.iter().enumerate() {
        let n = if k + 1 == TOPICS.len() { last } else { per };
        for i in 0..n {
            let text = format!("An application for {topic}, variant {i}, with tools for {topic} fans.");
            lines.push(serde_json::json!({ "text": text, "label": topic }).to_string());
        }
    }
    std::fs::write(dir.join("topics.jsonl"), lines.join("\n") + "\n").unwrap();
    let config = dir.join("meta.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nsource = \"topics.jsonl\"\nval_fraction = 0.34\ntest_fraction = 0.34\n\n\
             [episodes]\nn_way = 3\nk_shot = 1\nq_query = 2\n\n\
             [protonet]\nhidden = 8\nsteps = 4\nepisodes_per_step = 1\nval_episodes = 2\neval_every = 2\nsave_every = 2\n\n\
             [anil.train]\nhidden = 8\nsteps = 2\nepisodes_per_step = 1\nval_episodes = 2\n\n\
             [anil.inner]\nsteps = 2\neval_steps = 3\n\n\
             {maml}\
             [baselines.head]\nepochs = 5\n\n\
             [eval]\nepisodes = 5\n\n\
             [output]\ndir = {:?}\n",
            dir.join("run").to_str().unwrap(),
            maml = ["fomaml", "maml", "reptile"]
                .map(|m| format!(
                    "[{m}]\nenabled = true\n[{m}.train]\nhidden = 8\nsteps = 2\nepisodes_per_step = 1\nval_episodes = 2\n\
                     [{m}.inner]\nsteps = 1\neval_steps = 2\n\n"
                ))
                .concat()
        ),
    )
    .unwrap();
    config
}

#[test]
fn meta_scores_every_learner_and_resumes_from_kept_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 5, 5);
    let run = graft(&["meta", config.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let learners: Vec<&str> =
        summary["results"].as_array().unwrap().iter().map(|r| r["learner"].as_str().unwrap()).collect();
    assert_eq!(learners, ["nearest_centroid", "linear_head", "protonet", "anil", "fomaml", "maml", "reptile"]);
    for r in summary["results"].as_array().unwrap() {
        let a = &r["accuracy"];
        assert_eq!(a["episodes"], 5, "{r}");
        assert!((0.0..=1.0).contains(&a["mean"].as_f64().unwrap()) && a["ci95"].as_f64().unwrap() >= 0.0, "{r}");
    }
    let names = |split: &str| -> Vec<String> {
        summary["classes"][split].as_array().unwrap().iter().map(|c| c[0].as_str().unwrap().to_string()).collect()
    };
    let (train, val, test) = (names("train"), names("val"), names("test"));
    assert_eq!((train.len(), val.len(), test.len()), (3, 3, 3));
    assert!(train.iter().all(|c| !val.contains(c) && !test.contains(c)) && val.iter().all(|c| !test.contains(c)));
    assert_eq!(summary["meta_train"]["steps"], 4);
    for m in ["anil", "fomaml", "maml", "reptile"] {
        assert_eq!(summary[format!("{m}_train")]["steps"], 2, "{m}");
        assert!(dir.path().join("run").join(m).join("metrics.jsonl").is_file(), "{m}");
    }
    assert_eq!(summary["features_cached"], false);
    let out = dir.path().join("run");
    assert!(out.join("protonet/metrics.jsonl").is_file() && out.join("anil/metrics.jsonl").is_file());
    assert!(out.join("features.safetensors").is_file());
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk, summary);

    // Resuming the finished run reads the embeddings back and scores the same episodes alike.
    let again = graft(&["meta", config.to_str().unwrap(), "--resume", "--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["features_cached"], true);
    assert_eq!(again["results"].as_array().unwrap().len(), 7);
    for (a, b) in again["results"].as_array().unwrap().iter().zip(summary["results"].as_array().unwrap()) {
        assert_eq!(a["accuracy"], b["accuracy"], "{a} vs {b}");
    }

    // The table form.
    let table = graft(&["meta", config.to_str().unwrap(), "--resume"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("3-way 1-shot") && text.contains("protonet") && text.contains("nearest_centroid"), "{text}");
}

#[test]
fn a_class_too_small_for_the_episodes_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 5, 2);
    let run = graft(&["meta", config.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(3), "{}", String::from_utf8_lossy(&run.stderr));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("class `fonts`") && err.contains("2 examples"), "{err}");
    assert!(!dir.path().join("run/features.safetensors").exists(), "nothing is embedded before the check");
}

#[test]
fn the_whole_backbone_baseline_fine_tunes_a_copy_per_episode() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 5, 5);
    let args = [
        "meta",
        config.to_str().unwrap(),
        "--set",
        "baselines.fine_tune=true",
        "--set",
        "baselines.fine_tune_episodes=2",
        "--set",
        "baselines.fine_tune_head.epochs=3",
        "--json",
    ];
    let run = graft(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let results = summary["results"].as_array().unwrap();
    let tuned = results.iter().find(|r| r["learner"] == "fine_tuned_encoder").expect("the baseline is scored");
    assert_eq!(tuned["meta_trained"], false);
    assert_eq!(tuned["accuracy"]["episodes"], 2, "{tuned}");
    let mean = tuned["accuracy"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mean), "{tuned}");
    // Fine-tuning copies: the frozen-feature learners scored after it are unchanged by it.
    let plain = graft(&["meta", config.to_str().unwrap(), "--resume", "--json"]);
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    for r in plain["results"].as_array().unwrap() {
        let same = results.iter().find(|x| x["learner"] == r["learner"]).unwrap();
        assert_eq!(same["accuracy"], r["accuracy"], "{}", r["learner"]);
    }

    let bad = graft(&[
        "meta",
        config.to_str().unwrap(),
        "--set",
        "baselines.fine_tune=true",
        "--set",
        "baselines.fine_tune_layers=0",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("baselines.fine_tune_layers must be at least 1"), "{err}");
}
