//! Parity of the Llama implementation with transformers on the real SmolLM2 GGUF
//! (tests/golden/logits.safetensors, logits.json; tolerances from tests/golden/README.md).

mod common;

use candle_core::{DType, Device, Tensor};
use graft::io::gguf::GgufFile;
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use graft::models::Model;
use std::sync::OnceLock;

fn model(dtype: DType) -> Llama {
    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    let opts = LoadOptions { device: Device::Cpu, dtype, format: WeightFormat::Dense };
    Llama::from_gguf(&gguf, &opts).unwrap()
}

fn f32_model() -> &'static Llama {
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| model(DType::F32))
}

struct Prompt {
    ids: Vec<u32>,
    last_f64: Vec<f64>,
    top10: Vec<Vec<i64>>,
    top10_values: Vec<Vec<f32>>,
}

fn prompts() -> Vec<Prompt> {
    let meta = common::golden_json("logits.json");
    let tensors =
        candle_core::safetensors::load(common::golden_dir().join("logits.safetensors"), &Device::Cpu).unwrap();
    meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let k = p["index"].as_u64().unwrap();
            let get = |n: &str| tensors.get(&format!("prompt{k}.{n}")).unwrap().clone();
            Prompt {
                ids: p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
                last_f64: get("last_logits_f64").to_vec1().unwrap(),
                top10: get("top10_ids").to_vec2().unwrap(),
                top10_values: get("top10_values").to_vec2().unwrap(),
            }
        })
        .collect()
}

#[test]
fn f32_training_and_inference_paths_match_transformers() {
    let m = f32_model();
    for p in prompts() {
        for train in [true, false] {
            let l = common::forward_logits(m, &p.ids, train);
            let d = common::max_abs_diff_f64(&common::last_row_f64(&l), &p.last_f64);
            assert!(d <= 5e-4, "train={train}: max |Δ| vs f64 reference = {d}");
            common::check_top10(&l, &p.top10, &p.top10_values);
        }
    }
}

#[test]
fn f64_training_path_matches_true_float64_reference() {
    let m = model(DType::F64);
    for p in prompts() {
        let l = common::forward_logits(&m, &p.ids, true);
        let d = common::max_abs_diff_f64(&common::last_row_f64(&l), &p.last_f64);
        assert!(d <= 1e-9, "f64 max |Δ| = {d}");
    }
}

#[test]
fn kv_cached_decoding_equals_full_forward() {
    let m = f32_model();
    let ids = &prompts()[1].ids;
    let full = common::last_row_f64(&common::forward_logits(m, ids, false));
    let mut cache = m.new_cache();
    let split = ids.len() - 3;
    let x = Tensor::new(&ids[..split], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    m.forward_infer(&x, &mut cache).unwrap();
    let mut last = None;
    for &id in &ids[split..] {
        let x = Tensor::new(&[id], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        last = Some(m.forward_infer_last(&x, &mut cache).unwrap());
    }
    let inc: Vec<f64> = last.unwrap().squeeze(0).unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let d = common::max_abs_diff_f64(&inc, &full);
    assert!(d <= 1e-3, "cached vs full: {d}");
    assert_eq!(cache.len(), ids.len());
}
