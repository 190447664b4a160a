//! `graft speech train`, `graft speech export` and `graft transcribe --adapter` end to end with
//! whisper-tiny-en on the committed clips: a short LoRA run writes its summary and adapter, the
//! adapter merged into an exported Hugging Face folder transcribes exactly as the adapter
//! applied at load time, and a config with an unknown key is refused naming it.

mod common;

use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let out = common::graft(args).output().unwrap();
    assert!(out.status.success(), "graft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("graft {args:?}: {e}"))
}

#[test]
fn train_export_and_transcribe_with_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    common::speech_clips_manifest(dir.path());
    let config = dir.path().join("speech.toml");
    std::fs::write(
        &config,
        "[model]\nname = \"whisper-tiny-en\"\n\n[data]\ntrain = \"clips.jsonl\"\neval = \"clips.jsonl\"\n\n\
         [adapter]\nr = 4\nalpha = 8.0\n\n[train]\nmax_steps = 3\nbatch_size = 3\nlr = 2e-3\n\n\
         [decode]\nmax_new_tokens = 24\nresamples = 100\n\n[output]\ndir = \"run\"\n",
    )
    .unwrap();
    let s = run_json(&["speech", "train", config.to_str().unwrap(), "--json"]);
    assert_eq!(s["steps"], 3, "{s}");
    assert_eq!(s["scores"]["eval"]["clips"], 3, "{s}");
    let adapter = dir.path().join("run/adapter");
    assert!(adapter.join("adapter_config.json").is_file());

    let hf = dir.path().join("tiny-en-de");
    let exported = run_json(&[
        "speech",
        "export",
        "--model",
        "whisper-tiny-en",
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(exported["tensors"], 167, "{exported}");
    let clip = dir.path().join("de.wav");
    let transcribe = |model: &str, extra: &[&str]| {
        let mut args = vec!["transcribe", "--model", model, "--beam-size", "1", "--json"];
        args.extend_from_slice(extra);
        args.push(clip.to_str().unwrap());
        let row = run_json(&args);
        (row["text"].clone(), row["tokens"].clone())
    };
    let with_adapter = transcribe("whisper-tiny-en", &["--adapter", adapter.to_str().unwrap()]);
    assert_eq!(transcribe(hf.to_str().unwrap(), &[]), with_adapter, "merged export vs adapter at load time");

    std::fs::write(&config, "[data]\ntrain = \"clips.jsonl\"\neval = \"clips.jsonl\"\nlimit = 3\n").unwrap();
    let out = common::graft(&["speech", "train", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"), "{}", String::from_utf8_lossy(&out.stderr));
}
