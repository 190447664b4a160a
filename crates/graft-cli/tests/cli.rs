//! The `graft` binary end to end: every command's help has an example, the quick start runs
//! (shortened) and its run exports to every format with a passing read-back check, and its
//! adapter runs unmerged through `--adapter` with the merged export's results, and a model file
//! with a hostile hyperparameter is an error, not a panic.

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

/// Runs graft and parses its `--json` stdout.
fn graft_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&graft(args).stdout).unwrap()
}

#[test]
fn every_command_documents_an_example() {
    let top = String::from_utf8(graft(&["--help"]).stdout).unwrap();
    for cmd in [
        "fetch",
        "tokenize",
        "generate",
        "eval",
        "bench",
        "train",
        "validate",
        "preprocess",
        "export",
        "quickstart",
        "compare",
        "embed",
        "data",
    ] {
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
    let out = graft(&[
        "quickstart",
        "--steps",
        "2",
        "--train",
        "32",
        "--test",
        "24",
        "--batch-size",
        "4",
        "--out",
        run_s,
        "--json",
    ]);
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

    let exports = [
        ("peft", None, "peft"),
        ("merged", None, "merged"),
        ("gguf", Some("f32"), "gguf/model.gguf"),
        ("gguf-lora", Some("f32"), "lora/adapter.gguf"),
    ];
    for (format, extra, path) in exports {
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
    let tok = graft(&[
        "tokenize",
        "--json",
        "--model",
        dir.path().join("gguf/model.gguf").to_str().unwrap(),
        "<|im_start|>user",
    ]);
    let ids: serde_json::Value = serde_json::from_slice(&tok.stdout).unwrap();
    assert_eq!(ids["ids"][0], 1);

    // Each GGUF export has an Ollama Modelfile beside it.
    let merged_mf = std::fs::read_to_string(dir.path().join("gguf/Modelfile")).unwrap();
    assert!(merged_mf.contains("\nFROM ./model.gguf\nTEMPLATE \"\"\"{{- range .Messages }}"), "{merged_mf}");
    assert!(merged_mf.contains("PARAMETER stop \"<|im_end|>\""), "{merged_mf}");
    let lora_mf = std::fs::read_to_string(dir.path().join("lora/Modelfile")).unwrap();
    assert!(lora_mf.contains("\nFROM ./SmolLM2-135M-Instruct.Q4_1.gguf\nADAPTER ./adapter.gguf\n"), "{lora_mf}");

    adapter_runs_like_the_merged_export(dir.path(), &run);
}

/// `--adapter` (PEFT folder or GGUF LoRA) gives the merged export's perplexity and greedy tokens,
/// and differs from the base model (so the adapter is really applied).
fn adapter_runs_like_the_merged_export(dir: &std::path::Path, run: &std::path::Path) {
    let text = dir.join("text.txt");
    std::fs::write(&text, "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file except in compliance with the License. You may obtain a copy of the License at the address below. Unless required by applicable law or agreed to in writing, software distributed under the License is distributed on an \"AS IS\" BASIS.").unwrap();
    let (text, merged) = (text.to_str().unwrap(), dir.join("merged"));
    let ppl = |extra: &[&str]| {
        let mut args = vec!["eval", "perplexity", "--text", text, "--window", "32", "--json"];
        args.extend(extra);
        graft_json(&args)["ppl"].as_f64().unwrap()
    };
    let with_adapter = ppl(&["--adapter", run.join("adapter").to_str().unwrap()]);
    let with_gguf_lora = ppl(&["--adapter", dir.join("lora/adapter.gguf").to_str().unwrap()]);
    let merged_ppl = ppl(&["--model", merged.to_str().unwrap()]);
    let base = ppl(&[]);
    let rel = |a: f64, b: f64| (a - b).abs() / b;
    assert!(rel(with_adapter, merged_ppl) < 1e-4, "adapter {with_adapter} vs merged {merged_ppl}");
    assert!(rel(with_gguf_lora, merged_ppl) < 1e-4, "GGUF LoRA {with_gguf_lora} vs merged {merged_ppl}");
    assert!(rel(base, merged_ppl) > 1e-3, "the adapter does not change perplexity ({base} vs {merged_ppl})");

    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--chat", "--prompt", "I love this phone!", "--max-new-tokens", "4", "--json"];
        args.extend(extra);
        graft_json(&args)
    };
    let a = generate(&["--adapter", run.join("adapter").to_str().unwrap()]);
    let m = generate(&["--model", merged.to_str().unwrap()]);
    assert_eq!(a["new_ids"], m["new_ids"]);
    assert_eq!(a["adapter"], run.join("adapter").to_str().unwrap());

    // A folder that is not an adapter is refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(["eval", "perplexity", "--text", text, "--window", "32", "--adapter", merged.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("adapter_config.json is missing"), "{err}");
}

/// The default model with `llama.attention.head_count` = 0 (which once divided by zero): exit
/// code 1 and a message naming the key and the value, not a panic (exit code 101).
#[test]
fn a_zero_head_count_is_an_error_not_a_panic() {
    use candle_core::quantized::gguf_file::Value;
    use graft::io::gguf::{GgufFile, GgufWriter};
    let source = match graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap() {
        graft::assets::ModelSource::Gguf(p) => p,
        other => panic!("default model resolved to {other:?}"),
    };
    let src = GgufFile::open(&source).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    w.set_metadata("llama.attention.head_count", Value::U32(0)).unwrap();
    for name in src.tensor_names() {
        w.add_qtensor(name, src.qtensor(name, &candle_core::Device::Cpu).unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero-heads.gguf");
    w.write(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(["generate", "--model", path.to_str().unwrap(), "--prompt", "Hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`llama.attention.head_count`: found 0") && !stderr.contains("panicked"), "{stderr}");
}
