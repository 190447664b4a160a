//! Shared helpers of the CLI tests: a small decoder written as a Hugging Face folder, so that
//! whole commands run in CI time on real code paths (the default model's tokenizer and chat
//! template, seeded random weights).
#![allow(dead_code)]

use graft::models::llama::random::{smollm2_135m_config, RandomWeights};
use graft::models::llama::{Llama, LlamaConfig, LoadOptions};
use std::path::Path;

/// The small decoder's shapes: the default model's vocabulary, 2 layers, hidden 64.
pub fn small_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: Some(16),
        max_position_embeddings: 512,
        ..smollm2_135m_config()
    }
}

/// Writes a decoder of shapes `cfg` (seeded random weights, seed 3) with the default model's
/// tokenizer and chat template as a Hugging Face folder.
pub fn write_model(dir: &Path, cfg: &LlamaConfig) {
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model");
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let model = Llama::load(cfg.clone(), &RandomWeights::new(cfg.clone(), 3), &LoadOptions::default()).unwrap();
    graft::io::hf_folder::write_llama_folder(&model, &tok, dir, candle_core::DType::F32).unwrap();
}

/// Writes the small decoder ([`small_config`]).
pub fn write_small_model(dir: &Path) {
    write_model(dir, &small_config());
}
