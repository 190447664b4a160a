//! Windowed perplexity matches the reference (tests/golden/perplexity.json).
//!
//! Protocol: the whole text tokenized without special tokens, windows of 512 tokens, the partial
//! last one dropped, each window scored alone; f32 forward, log-softmax in f64. Tolerance:
//! `mean_nll` within relative 5e-5 of the true-float64 value, 4 windows, first 16 ids identical.

mod common;

use candle_core::{DType, Device};
use graft::eval::perplexity;
use graft::io::gguf::GgufFile;
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use graft::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

#[test]
fn perplexity_of_the_reference_text_matches_float64_reference() {
    let reference = common::golden_json("perplexity.json");
    let path = reference["file"].as_str().unwrap();
    let bytes = std::fs::read(path);
    if !common::require(bytes.is_ok(), format!("{path} is not on this machine (Debian's base-files has it)")) {
        return;
    }
    let bytes = bytes.unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let want = reference["file_sha256"].as_str().unwrap();
    if !common::require(sha == want, format!("{path} has sha256 {sha}, the reference was computed on {want}")) {
        return;
    }
    let text = String::from_utf8(bytes).unwrap();
    let source = graft::assets::ModelSource::Gguf(common::default_gguf());
    let tok = Tokenizer::from_source(&source).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let first: Vec<u32> =
        reference["first_16_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(&ids[..16], &first[..]);
    assert_eq!(ids.len() as u64, reference["n_tokens"].as_u64().unwrap());

    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Dense };
    let model = Llama::from_gguf(&gguf, &opts).unwrap();
    let window = reference["window"].as_u64().unwrap() as usize;
    let mut seen = Vec::new();
    let p = perplexity(&model, &ids, window, &mut |done, total| seen.push((done, total))).unwrap();

    assert_eq!(p.n_windows as u64, reference["n_windows"].as_u64().unwrap());
    assert_eq!(p.n_predicted as u64, reference["fp64"]["n_predicted"].as_u64().unwrap());
    assert_eq!(seen.last(), Some(&(p.n_windows, p.n_windows)));
    let want = reference["fp64"]["mean_nll"].as_f64().unwrap();
    let rel = (p.mean_nll - want).abs() / want;
    assert!(rel <= 5e-5, "mean_nll {} vs fp64 {want}: rel {rel:e}", p.mean_nll);
    assert!((p.ppl - p.mean_nll.exp()).abs() < 1e-12);
}
