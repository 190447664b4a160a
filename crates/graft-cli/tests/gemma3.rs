//! Gemma-3-270M through the model-taking commands by its asset name: greedy `generate` gives the
//! reference continuation (tests/golden/gemma3/greedy.jsonl), `--chat` reports that the file has
//! no chat template, and `eval perplexity` puts the tokenizer's BOS in front of every window.

mod common;

use std::process::Output;

fn run(args: &[&str]) -> Output {
    common::graft(args).output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gemma3_generates_the_reference_continuation() {
    let case = &common::golden_jsonl("gemma3/greedy.jsonl")[0];
    // EOS never wins in the reference run of this prompt, so an unmasked run reproduces it.
    assert!(case["eos_was_raw_argmax_at_steps"].as_array().unwrap().is_empty());
    let prompt = case["prompt"].as_str().unwrap();
    let out = run(&["generate", "--model", "gemma3-270m", "--prompt", prompt, "--max-new-tokens", "6", "--json"]);
    let report = json_of(&out);
    assert_eq!(report["prompt_ids"], case["prompt_ids"]);
    assert_eq!(report["new_ids"].as_array().unwrap()[..], case["new_ids"].as_array().unwrap()[..6]);

    let out = run(&["generate", "--model", "gemma3-270m", "--chat", "--prompt", prompt]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("has no chat template"), "{stderr}");
}

#[test]
fn gemma3_perplexity_scores_every_window_after_bos() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. ".repeat(8)).unwrap();
    let args = ["eval", "perplexity", "--model", "gemma3-270m", "--text", text.to_str().unwrap()];
    let report = json_of(&run(&[&args[..], &["--window", "16", "--json"]].concat()));
    assert_eq!(report["bos_per_window"], true);
    let n_windows = report["n_windows"].as_u64().unwrap();
    assert!(n_windows >= 2);
    assert_eq!(report["n_predicted"].as_u64().unwrap(), 16 * n_windows);
    let ppl = report["ppl"].as_f64().unwrap();
    // Plain English in 16-token windows: 32 measured; a broken forward gives thousands (a
    // uniform guess over the vocabulary is 262,144).
    assert!(ppl.is_finite() && ppl > 1.0 && ppl < 100.0, "ppl {ppl}");
}
