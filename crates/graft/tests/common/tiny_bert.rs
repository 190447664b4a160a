//! A tiny random BERT with MiniLM's vocabulary and tokenizer, real tweets and run metrics,
//! shared by the encoder-pretraining tests (masked LM, SimCSE).
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use graft::models::bert::BertConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// all-MiniLM-L6-v2, fetched into the cache if needed.
pub fn minilm() -> PathBuf {
    graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM")
}

/// MiniLM's shape at toy size: its vocabulary, 2 layers of width 16.
pub fn tiny_config() -> BertConfig {
    BertConfig {
        model_type: "bert".into(),
        vocab_size: 30522,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
        position_embedding_type: "absolute".into(),
        pad_token_id: Some(0),
    }
}

/// Writes a random BERT of `tiny_config()` (seeded) with MiniLM's tokenizer files into `dir`;
/// `skip` names tensors left out.
pub fn write_tiny_bert(dir: &Path, skip: &[&str]) -> PathBuf {
    let cfg = tiny_config();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(minilm().join(f), dir.join(f)).unwrap();
    }
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![cfg.vocab_size, h]),
        ("embeddings.position_embeddings.weight".into(), vec![cfg.max_position_embeddings, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", ff, h),
            ("output.dense", h, ff),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{norm}.weight"), vec![h]));
            shapes.push((format!("{p}.{norm}.bias"), vec![h]));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (center, spread) = if name.ends_with("LayerNorm.weight") { (1.0, 0.2) } else { (0.0, 0.3) };
            let v: Vec<f32> = (0..n).map(|_| center + spread * (rng.random::<f32>() * 2.0 - 1.0)).collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// A JSONL corpus of the first `n` training tweets.
pub fn tweet_corpus(dir: &Path, n: usize) -> PathBuf {
    let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
    let tweets = graft::datasets::tweets::read(&corpus).unwrap();
    let path = dir.join("tweets.jsonl");
    let lines: Vec<String> =
        tweets.iter().take(n).map(|t| serde_json::json!({ "text": t.text }).to_string() + "\n").collect();
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

/// The lines of a run's `metrics.jsonl` without the timing field.
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
