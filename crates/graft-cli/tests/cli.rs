//! The `graft` binary end to end: every command's help has an example, the quick start runs
//! (shortened) and its run exports to every format with a passing read-back check.

use std::process::Command;

fn graft(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "graft {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn every_command_documents_an_example() {
    let top = String::from_utf8(graft(&["--help"]).stdout).unwrap();
    for cmd in ["fetch", "tokenize", "generate", "eval", "bench", "train", "validate", "preprocess", "export", "quickstart", "embed", "data"] {
        assert!(top.contains(cmd), "`graft --help` does not list {cmd}");
        let help = String::from_utf8(graft(&[cmd, "--help"]).stdout).unwrap();
        assert!(help.contains("Example"), "`graft {cmd} --help` has no example");
    }
}

#[test]
fn quickstart_then_export_to_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("qs");
    let run_s = run.to_str().unwrap();
    let out = graft(&["quickstart", "--steps", "2", "--train", "32", "--test", "24", "--batch-size", "4", "--out", run_s, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for model in ["base", "finetuned"] {
        let acc = report[model]["classification"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(report[model]["classification"]["macro_f1"].as_f64().is_some());
    }
    assert_eq!(report["n_test"], 24);
    assert_eq!(report["training"]["steps"], 2);
    assert!(run.join("adapter/adapter_config.json").is_file());
    assert!(run.join("quickstart.json").is_file());

    for (format, extra, path) in [("peft", None, "peft"), ("merged", None, "merged"), ("gguf", Some("f32"), "model.gguf")] {
        let target = dir.path().join(path);
        let mut args = vec!["export", run_s, "--format", format, "--out", target.to_str().unwrap(), "--json"];
        if let Some(t) = extra {
            args.extend(["--gguf-type", t]);
        }
        let out = graft(&args);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["argmax_agrees"], true, "{format}");
        assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 1e-3, "{format}: {r}");
    }
    // The merged GGUF keeps the tokenizer and chat template.
    let tok = graft(&["tokenize", "--json", "--model", dir.path().join("model.gguf").to_str().unwrap(), "<|im_start|>user"]);
    let ids: serde_json::Value = serde_json::from_slice(&tok.stdout).unwrap();
    assert_eq!(ids["ids"][0], 1);
}
