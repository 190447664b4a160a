//! The `graft` binary end to end: every command's help has an example, the quick start runs
//! (shortened) and learns (held-out loss and macro-F1 against the base model), its run exports to
//! every format — a merged GGUF as f32, f16 and q8_0 — with a passing read-back check, and its
//! adapter runs unmerged through `--adapter` with the merged export's results, and a model file
//! with a hostile hyperparameter is an error, not a panic; `graft report` summarises a results
//! file.

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
        "eval probe",
        "eval retrieval",
        "bench",
        "train",
        "validate",
        "preprocess",
        "export",
        "quickstart",
        "compare",
        "report",
        "embed",
        "features",
        "features progressive",
        "meta",
        "data",
        "data build",
        "data teacher-answers",
        "speech score",
        "speech train",
        "speech export",
        "transcribe",
        "vision train",
        "vision detect",
        "vision segment",
        "classify",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        assert!(top.contains(args[0]), "`graft --help` does not list {cmd}");
        args.push("--help");
        let help = String::from_utf8(graft(&args).stdout).unwrap();
        assert!(help.contains("Example"), "`graft {cmd} --help` has no example");
    }
}

/// `graft report` on a results file: the table on stdout, the three files, and bad requests
/// refused with the input-error exit code and nothing written.
#[test]
fn report_summarises_a_results_file() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    std::fs::write(
        &results,
        "{\"name\":\"base\",\"seed\":1,\"acc\":0.5}\n{\"name\":\"lora\",\"seed\":1,\"acc\":0.75}\n\
         {\"name\":\"base\",\"seed\":2,\"acc\":0.6}\n{\"name\":\"lora\",\"seed\":2,\"acc\":0.7}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("rep");
    let (file, out) = (results.to_str().unwrap(), out_dir.to_str().unwrap());
    let run = graft(&["report", file, "--against", "name=base", "--out", out]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(table.contains("| lora | 2 | 0.725 ± 0.035 |"), "{table}");
    assert!(table.contains("| lora − base | 2 | 0.175 ± 0.106 |"), "{table}");
    for f in ["report.md", "report.json", "report.html"] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }

    let fresh = dir.path().join("never");
    for (args, why) in [
        (vec!["--against", "base"], "--against wants FIELD=VALUE"),
        (vec!["--metric", "loss"], "metric `loss`"),
        (vec!["--by", "model"], "no row has every grouping field (model)"),
    ] {
        let mut all = vec!["report", file, "--out", fresh.to_str().unwrap()];
        all.extend(args);
        let run = Command::new(env!("CARGO_BIN_EXE_graft")).args(&all).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(3), "{all:?}: {err}");
        assert!(err.contains(why), "{all:?}: {err}");
        assert!(!fresh.exists(), "{all:?} wrote its folder");
    }
}

/// Options that cannot train are refused before anything is fetched, scored or written.
#[test]
fn quickstart_refuses_bad_options_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("qs");
    for (option, why) in [
        ("--lr=-1", "train.lr"),
        ("--lr=0", "train.lr"),
        ("--steps=0", "train.max_steps"),
        ("--batch-size=0", "train.batch_size"),
        ("--test=0", "at least 1 tweet"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(["quickstart", option, "--out", run.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "quickstart {option} was accepted");
        assert!(err.contains(why), "quickstart {option}: {err}");
        assert!(!run.exists(), "quickstart {option} wrote {}", run.display());
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
    let score = |model: &str, key: &str| report[model]["classification"][key].as_f64().unwrap();
    let loss = |model: &str| report[model]["eval_loss"].as_f64().unwrap();
    eprintln!(
        "quick start: held-out loss {} -> {}, accuracy {} -> {}, macro-F1 {} -> {}",
        loss("base"),
        loss("finetuned"),
        score("base", "accuracy"),
        score("finetuned", "accuracy"),
        score("base", "macro_f1"),
        score("finetuned", "macro_f1")
    );
    // Fixed seed and CPU arithmetic: these numbers are the same every run. The pretrained model
    // knows English (held-out answer loss 4.51; a model without that knowledge starts near
    // ln(vocab) = 10.8), two LoRA steps teach it the answer format (loss 1.03 after; answering a
    // label word uniformly at random would give ln(3)/2 = 0.55), and the fine-tuned model's
    // macro-F1 over the three labels beats the base model's (0.315 against 0.188: the base model
    // calls nearly every tweet negative).
    assert!((2.0..6.0).contains(&loss("base")), "{report}");
    assert!(loss("finetuned") < 0.5 * loss("base") && loss("finetuned") < 1.5, "{report}");
    assert!(score("finetuned", "macro_f1") > score("base", "macro_f1") + 0.05, "{report}");
    for model in ["base", "finetuned"] {
        assert!((0.0..=1.0).contains(&score(model, "accuracy")), "{report}");
    }
    assert_eq!(report["n_test"], 24);
    assert_eq!(report["training"]["steps"], 2);
    assert!(run.join("adapter/adapter_config.json").is_file());
    assert!(run.join("quickstart.json").is_file());

    // Every format, and a merged GGUF of every tensor type (f16 is the default).
    let exports = [
        ("peft", None, "peft"),
        ("merged", None, "merged"),
        ("gguf", Some("f32"), "gguf/model.gguf"),
        ("gguf", None, "gguf-f16/model.gguf"),
        ("gguf", Some("q8_0"), "gguf-q8/model.gguf"),
        ("gguf-lora", Some("f32"), "lora/adapter.gguf"),
    ];
    for (format, extra, path) in exports {
        let target = dir.path().join(path);
        let mut args = vec!["export", run_s, "--format", format, "--out", target.to_str().unwrap(), "--json"];
        if let Some(t) = extra {
            args.extend(["--gguf-type", t]);
        }
        let r = graft_json(&args);
        eprintln!("{format} {extra:?}: {r}");
        let check = &r["check"];
        assert!(check["max_abs_logit_diff"].as_f64().unwrap() <= check["tolerance"].as_f64().unwrap(), "{r}");
        let vs_trained = r["max_abs_logit_diff"].as_f64().unwrap();
        if format == "gguf" {
            let ty = extra.unwrap_or("f16");
            assert_eq!(check["reference"], format!("the trained weights rounded to {ty}"), "{r}");
            assert_eq!(check["max_abs_weight_diff"], 0.0, "{r}");
            assert!(check["tolerance"].as_f64().unwrap() <= 1e-4, "{r}");
        } else {
            assert_eq!(check["reference"], "the trained model", "{r}");
        }
        if extra != Some("f32") && format == "gguf" {
            // Rounding to f16 / q8_0 moves the logits: the file really holds that type.
            assert!(vs_trained > 1e-3, "{format} {extra:?}: {r}");
        } else {
            assert_eq!(r["argmax_agrees"], true, "{format}");
            assert!(vs_trained <= 1e-3, "{format}: {r}");
        }
    }
    let size = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().len() as f64;
    let (f32_bytes, f16_bytes, q8_bytes) =
        (size("gguf/model.gguf"), size("gguf-f16/model.gguf"), size("gguf-q8/model.gguf"));
    assert!(f16_bytes < 0.55 * f32_bytes && q8_bytes < 0.55 * f16_bytes, "{f32_bytes} {f16_bytes} {q8_bytes}");
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
    let with_run_folder = ppl(&["--adapter", run.to_str().unwrap()]);
    let with_gguf_lora = ppl(&["--adapter", dir.join("lora/adapter.gguf").to_str().unwrap()]);
    let merged_ppl = ppl(&["--model", merged.to_str().unwrap()]);
    let base = ppl(&[]);
    let rel = |a: f64, b: f64| (a - b).abs() / b;
    assert!(rel(with_adapter, merged_ppl) < 1e-4, "adapter {with_adapter} vs merged {merged_ppl}");
    assert_eq!(with_run_folder, with_adapter, "a run folder stands for its adapter/");
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
    let from_run = generate(&["--adapter", run.to_str().unwrap()]);
    assert_eq!(from_run["new_ids"], m["new_ids"], "a run folder stands for its adapter/");

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
/// code 3 (bad input) and a message naming the key and the value, not a panic (exit code 101).
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
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`llama.attention.head_count`: found 0") && !stderr.contains("panicked"), "{stderr}");
}

/// `--threads N` (on every command) sets the CPU thread count that every kernel uses, and the
/// bench report says so; 0 threads is a usage error.
#[test]
fn the_thread_flag_sets_the_kernels_thread_count() {
    let r = graft_json(&[
        "--threads",
        "1",
        "bench",
        "generate",
        "--random-init",
        "--weights",
        "quantized",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "2",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--wait-idle",
        "0",
        "--json",
    ]);
    assert_eq!(r["threads"], 1, "{r}");
    assert!(["avx512-vnni", "avx2", "scalar"].contains(&r["q4_1_kernel"].as_str().unwrap()), "{r}");
    assert!(["avx512-vnni", "none"].contains(&r["q4_1_rows_kernel"].as_str().unwrap()), "{r}");
    let bad = Command::new(env!("CARGO_BIN_EXE_graft")).args(["--threads", "0", "fetch", "--list"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}
