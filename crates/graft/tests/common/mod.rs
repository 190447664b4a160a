//! Shared helpers for the integration tests of both crates (`crates/graft-cli/tests` includes this
//! file by path): where the golden files and the default model are, real training text, and
//! prerequisites that skip a test locally but fail it in CI.
#![allow(dead_code)]

use candle_core::{DType, Tensor};
use std::path::{Path, PathBuf};

/// The repository's copy of the reference values computed with transformers/peft.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Reads a golden JSON file.
pub fn golden_json(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Reads a golden JSONL file, one value per line.
pub fn golden_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The default model's GGUF file, fetched into the cache if needed.
pub fn default_gguf() -> PathBuf {
    match graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model") {
        graft::assets::ModelSource::Gguf(p) => p,
        other => panic!("default model resolved to {other:?}"),
    }
}

/// The default model loaded from its GGUF with dense f32 weights, on the CPU.
pub fn default_llama() -> graft::models::llama::Llama {
    let gguf = graft::io::gguf::GgufFile::open(default_gguf()).unwrap();
    graft::models::llama::Llama::from_gguf(&gguf, &graft::models::llama::LoadOptions::default()).unwrap()
}

/// The largest |a − b| over every element, in f64 (a NaN on either side gives NaN).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The largest |a − b| over two slices.
pub fn max_abs_diff_f64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Logits `[t, vocab]` of `ids` (one sequence) through the training path or, with a fresh KV
/// cache, the inference path.
pub fn forward_logits(m: &graft::models::llama::Llama, ids: &[u32], train: bool) -> Tensor {
    use graft::models::Model;
    let x = Tensor::new(ids, &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let out = if train { m.forward_train(&x).unwrap() } else { m.forward_infer(&x, &mut m.new_cache()).unwrap() };
    out.squeeze(0).unwrap()
}

/// The last row of logits `[t, vocab]`, in f64.
pub fn last_row_f64(l: &Tensor) -> Vec<f64> {
    let n = l.dim(0).unwrap();
    l.get(n - 1).unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

/// The indices of the `k` largest values of `row`, largest first, ties in index order (one
/// pass, no full sort of a vocabulary-sized row).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &v) in row.iter().enumerate() {
        if best.len() == k && v <= row[best[k - 1]] {
            continue;
        }
        let at = best.iter().position(|&j| v > row[j]).unwrap_or(best.len());
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

/// The top-10 ids of every row of `logits [t, vocab]` are the reference's (`top10` ids and
/// `top10_values` per position), except that ids whose reference values are within 1e-4 of
/// each other may swap.
pub fn check_top10(logits: &Tensor, top10: &[Vec<i64>], top10_values: &[Vec<f32>]) {
    let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
    for (pos, row) in rows.iter().enumerate() {
        for (r, got) in top_k(row, 10).into_iter().enumerate() {
            let want = top10[pos][r] as usize;
            if want != got {
                let vw = top10_values[pos][r];
                let near = top10_values[pos]
                    .iter()
                    .enumerate()
                    .any(|(j, v)| top10[pos][j] as usize == got && (v - vw).abs() <= 1e-4);
                assert!(near, "position {pos} rank {r}: got id {got}, reference {want}");
            }
        }
    }
}

/// Debian's copy of the Apache 2.0 licence (package `base-files`, on every Debian system): real
/// English text for training tests and the perplexity reference text.
pub const APACHE_2_0: &str = "/usr/share/common-licenses/Apache-2.0";

/// Writes `dir/licence.jsonl`: the paragraphs of [`APACHE_2_0`] longer than 40 characters, with
/// whitespace collapsed, one `{"text": ...}` row each.
pub fn licence_jsonl(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(APACHE_2_0).unwrap_or_else(|e| panic!("{APACHE_2_0} (Debian's base-files): {e}"));
    let path = dir.join("licence.jsonl");
    let lines: String = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() > 40)
        .map(|p| format!("{}\n", serde_json::json!({ "text": p })))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// Whether the tests run in CI: `CI=true` (or `1`), as CI services set it and `.ci/run` does.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks a test's prerequisite (a file, a program, package metadata) and returns `met`. When it
/// is not met, outside CI the test is skipped — the caller returns early, and `SKIPPED <test>:
/// <why>` goes to stderr past the harness's capture, so it shows in a plain `cargo test` — while
/// in CI ([`in_ci`]) the test fails with `why`: CI must run every test, not pass it unrun.
///
/// ```ignore
/// if !common::require(path.is_file(), format!("{} is not on this machine", path.display())) {
///     return;
/// }
/// ```
pub fn require(met: bool, why: impl std::fmt::Display) -> bool {
    if met {
        return true;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("test");
    assert!(!in_ci(), "{test}: prerequisite missing in CI (CI=true): {why}");
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}

/// [`require`]s apt's package index (`/var/lib/apt/lists/*_Packages*`), which fetching a Debian
/// package asset needs; false (a skip outside CI) without it.
pub fn require_apt_index() -> bool {
    let lists = std::fs::read_dir("/var/lib/apt/lists").map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
    let indexed = lists.is_ok_and(|names| names.iter().any(|n| n.to_string_lossy().contains("_Packages")));
    require(indexed, "no Debian package index in /var/lib/apt/lists (run `apt-get update`)")
}

/// [`require`]s the `npm` client, which fetching an npm package asset needs; false (a skip
/// outside CI) without it.
pub fn require_npm() -> bool {
    let found = std::process::Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success());
    require(found, "`npm` is not on PATH (Debian package npm)")
}

/// Runs `fit` with a progress callback that dies when step `kill_at` is reported — as abrupt as
/// a crash: no final checkpoint, nothing cleaned up, the step's metrics line already written.
pub fn killed_at<T>(kill_at: u64, fit: impl FnOnce(&mut dyn FnMut(graft::train::Event)) -> T) {
    let mut on_event = |e: graft::train::Event| {
        if let graft::train::Event::Step(r) = e {
            assert!(r.step < kill_at, "simulated kill after step {}", r.step);
        }
    };
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fit(&mut on_event)));
    assert!(died.is_err(), "the run should have died at step {kill_at}");
}

/// `metrics.jsonl` without its timings: each step's loss, rate, gradient norm and metrics.
pub fn metrics_without_timing(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect()
}

/// Runs `whole` (6 steps, a checkpoint every 2), then the same run killed after step 3 and
/// resumed, and checks both logged the same steps and wrote the same adapter.
pub fn distill_resumes_bit_identically(whole: &graft::config::distill::DistillConfig, dir: &Path) {
    graft::recipes::distill::run(whole, false, &mut |_| {}).unwrap();
    let cut = graft::config::distill::DistillConfig {
        output: graft::config::OutputSection { dir: dir.join("cut") },
        ..whole.clone()
    };
    killed_at(3, |on_event| graft::recipes::distill::run(&cut, false, on_event));
    assert_eq!(metrics_without_timing(&cut.output.dir).len(), 3, "step 3 was logged before the kill");
    graft::recipes::distill::run(&cut, true, &mut |_| {}).unwrap();
    let (a, b) = (metrics_without_timing(&whole.output.dir), metrics_without_timing(&cut.output.dir));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    for file in ["adapter/adapter_model.safetensors", "adapter/adapter_config.json"] {
        let read = |run: &Path| std::fs::read(run.join(file)).unwrap();
        assert!(read(&whole.output.dir) == read(&cut.output.dir), "{file} differs");
    }
}

/// Writes a decoder of shapes `cfg` with seeded random weights (`seed`) and the default model's
/// tokenizer and chat template as a Hugging Face folder.
pub fn write_model_seeded(dir: &Path, cfg: &graft::models::llama::LlamaConfig, seed: u64) {
    use graft::models::llama::{random::RandomWeights, Llama, LoadOptions};
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model");
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let model = Llama::load(cfg.clone(), &RandomWeights::new(cfg.clone(), seed), &LoadOptions::default()).unwrap();
    graft::io::hf_folder::write_llama_folder(&model, &tok, dir, DType::F32).unwrap();
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// Copies the committed English, German and Spanish clips (`tests/golden/speech`) into `dir`
/// and writes `dir/clips.jsonl`, a speech manifest of them with their reference texts.
pub fn speech_clips_manifest(dir: &Path) -> PathBuf {
    let clips = golden_json("speech/clips.json");
    let mut lines = String::new();
    for clip in clips["clips"].as_array().unwrap() {
        let file = clip["file"].as_str().unwrap();
        let Some(language) = ["en", "de", "es"].into_iter().find(|l| file == format!("{l}.wav")) else { continue };
        std::fs::copy(golden_dir().join("speech").join(file), dir.join(file)).unwrap();
        let line = serde_json::json!({"audio": file, "text": clip["text"], "language": language});
        lines.push_str(&format!("{line}\n"));
    }
    let path = dir.join("clips.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A game policy's tensors as bit patterns, name by name (bit-identical comparisons).
pub fn policy_bits(p: &graft::games::policy::PolicyNet) -> Vec<Vec<u32>> {
    p.named_tensors()
        .iter()
        .map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Checks the backward gradient of an f64 scalar `loss` against central finite differences
/// (step 1e-6, tolerance 1e-6 relative) at the elements `at(n)` of each variable of `n`
/// elements; returns how many elements were checked.
pub fn check_gradients<'a>(
    vars: impl IntoIterator<Item = &'a (String, candle_core::Var)>,
    loss: &dyn Fn() -> Tensor,
    at: &dyn Fn(usize) -> Vec<usize>,
) -> usize {
    let grads = loss().backward().unwrap();
    let mut checked = 0;
    for (name, var) in vars {
        let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in at(base.len()) {
            let moved = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.as_tensor().shape(), var.device()).unwrap()).unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let fd = (moved(1e-6) - moved(-1e-6)) / 2e-6;
            moved(0.0);
            assert!(
                (fd - g[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}[{i}]: finite difference {fd}, backward {}",
                g[i]
            );
            checked += 1;
        }
    }
    checked
}
