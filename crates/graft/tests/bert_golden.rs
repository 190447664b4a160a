//! Parity of the BERT encoder and sentence pooling with transformers + sentence-transformers on
//! all-MiniLM-L6-v2 (tests/golden/minilm_embeddings.json; protocol and tolerances in
//! tests/golden/README.md: ids exact, each embedding's cosine with the reference ≥ 0.99999, cosine
//! matrix max abs diff ≤ 1e-5), plus padding invariance and gradient reachability.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::assets::ModelSource;
use graft::models::bert::{Pass, SentenceEncoder};
use std::path::PathBuf;
use std::sync::OnceLock;

fn minilm_dir() -> PathBuf {
    graft::assets::ensure("all-minilm-l6-v2", false).expect("fetch all-minilm-l6-v2")
}

fn encoder(dtype: DType) -> SentenceEncoder {
    SentenceEncoder::from_hf_folder(&minilm_dir(), &Device::Cpu, dtype).unwrap()
}

fn f32_encoder() -> &'static SentenceEncoder {
    static E: OnceLock<SentenceEncoder> = OnceLock::new();
    E.get_or_init(|| encoder(DType::F32))
}

struct Golden {
    sentences: Vec<String>,
    ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f64>>,
    cosine: Vec<Vec<f64>>,
}

fn golden() -> Golden {
    let g = common::golden_json("minilm_embeddings.json");
    let rows = |key: &str| -> Vec<Vec<f64>> {
        g[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
            .collect()
    };
    Golden {
        sentences: g["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect(),
        ids: g["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect())
            .collect(),
        embeddings: rows("embeddings"),
        cosine: rows("cosine"),
    }
}

fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Checks `got` against the reference with the README's tolerances.
fn assert_matches_reference(got: &[Vec<f64>], g: &Golden, what: &str) {
    assert_eq!(got.len(), g.embeddings.len());
    for (i, (e, r)) in got.iter().zip(&g.embeddings).enumerate() {
        assert_eq!(e.len(), 384, "{what}: embedding width");
        let c = cosine(e, r);
        assert!(c >= 0.99999, "{what}: sentence {i}: cosine with the reference {c}");
        assert!((dot(e, e).sqrt() - 1.0).abs() < 1e-5, "{what}: sentence {i} is not unit-norm");
    }
    let matrix: Vec<Vec<f64>> = got.iter().map(|a| got.iter().map(|b| cosine(a, b)).collect()).collect();
    let d = max_abs_diff(&matrix, &g.cosine);
    assert!(d <= 1e-5, "{what}: cosine matrix max abs diff {d}");
}

#[test]
fn token_ids_match_exactly() {
    let g = golden();
    let enc = f32_encoder();
    for (s, want) in g.sentences.iter().zip(&g.ids) {
        let t = enc.tokenize(s).unwrap();
        assert_eq!(&t.ids, want, "{s:?}");
        assert!(!t.truncated);
    }
    assert_eq!(enc.max_len(), 256, "max_seq_length of sentence_bert_config.json");
}

#[test]
fn padded_batch_matches_reference_and_one_at_a_time() {
    let g = golden();
    let enc = f32_encoder();
    // All eight in one batch: lengths 8..14, so most rows carry padding.
    let batched = to_rows(&enc.embed_ids(&g.ids, Pass::Infer).unwrap());
    assert_matches_reference(&batched, &g, "f32 batched");
    let single: Vec<Vec<f64>> =
        g.ids.iter().flat_map(|ids| to_rows(&enc.embed_ids(std::slice::from_ref(ids), Pass::Infer).unwrap())).collect();
    assert_matches_reference(&single, &g, "f32 one at a time");
    let d = max_abs_diff(&batched, &single);
    assert!(d <= 1e-6, "padding changed an embedding by {d}");
    // The differentiable path computes the same function.
    let train = to_rows(&enc.embed_ids(&g.ids, Pass::Train).unwrap());
    let d = max_abs_diff(&batched, &train);
    assert!(d <= 1e-6, "train and infer paths differ by {d}");
    // `embed` (length-sorted batches of 3) returns the rows in input order.
    let mut calls = Vec::new();
    let out = enc.embed(&g.sentences, 3, &mut |done| calls.push(done)).unwrap();
    assert_eq!(calls, vec![3, 6, 8]);
    assert_eq!((out.n_truncated, out.n_tokens), (0, g.ids.iter().map(Vec::len).sum()));
    let d = max_abs_diff(&to_rows(&out.vectors), &batched);
    assert!(d <= 1e-6, "embed() differs from one padded batch by {d}");
}

#[test]
fn f64_matches_reference() {
    let g = golden();
    let enc = encoder(DType::F64);
    let got = enc.embed_ids(&g.ids, Pass::Infer).unwrap();
    assert_eq!(got.dtype(), DType::F64);
    assert_matches_reference(&to_rows(&got), &g, "f64");
}

#[test]
fn long_text_is_truncated_to_max_seq_length() {
    let enc = f32_encoder();
    let text = "graft ".repeat(400);
    let t = enc.tokenize(&text).unwrap();
    assert!(t.truncated);
    assert_eq!(t.ids.len(), 256);
    assert_eq!((t.ids[0], t.ids[255]), (101, 102), "[CLS] first and [SEP] kept last");
    let out = enc.embed(&[text.as_str(), "short"], 2, &mut |_| {}).unwrap();
    assert_eq!(out.n_truncated, 1);
}

#[test]
fn unfrozen_top_layers_get_gradients_and_nothing_else_does() {
    let mut enc = encoder(DType::F32);
    let vars = enc.model_mut().unfreeze_top_layers(2).unwrap();
    // 2 layers x (6 projections x (weight + bias) + 2 LayerNorms x (weight + bias)) = 32.
    assert_eq!(vars.len(), 32);
    assert!(vars.iter().all(|(n, _)| n.starts_with("encoder.layer.4.") || n.starts_with("encoder.layer.5.")));
    let g = golden();
    let e = enc.embed_ids(&g.ids[..3], Pass::Train).unwrap();
    // Loss: similarity of sentence 0 to 1 minus similarity of 0 to 2 (rows are unit-norm).
    let sims = e.matmul(&e.t().unwrap()).unwrap();
    let loss = (sims.get(0).unwrap().get(1).unwrap() - sims.get(0).unwrap().get(2).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in &vars {
        let gr = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name} got no gradient"));
        let norm = gr.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        assert!(norm.is_finite() && norm > 0.0, "{name}: gradient norm {norm}");
    }
    assert!(enc.model_mut().unfreeze_top_layers(7).is_err());
}

#[test]
fn non_encoder_sources_are_refused_with_a_reason() {
    let err = SentenceEncoder::load(&ModelSource::Gguf(common::golden_dir().join("x.gguf")), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("BERT encoder folder"), "{err}");
    // A folder whose config.json describes another family.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(minilm_dir().join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "llama".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = SentenceEncoder::from_hf_folder(dir.path(), &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("`model_type`: found `llama`") && err.contains("config.json"), "{err}");
    cfg["model_type"] = "bert".into();
    cfg["hidden_act"] = "relu".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = SentenceEncoder::from_hf_folder(dir.path(), &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("`hidden_act`: found `relu`"), "{err}");
}
