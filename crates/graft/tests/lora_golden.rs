//! LoRA and full fine-tuning gradients against the peft/transformers reference
//! (tests/golden/lora_grads.json + lora_grads.safetensors; tolerances from tests/golden/README.md).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use graft::adapters::lora::{self, LoraLayer, LoraSpec};
use graft::io::gguf::GgufFile;
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use graft::models::Model;
use graft::ops::{with_matmul_precision, MatmulPrecision};
use graft::train::loss::shifted_mean_nll;
use graft::train::optim::{AdamWConfig, Optimizer, OptimizerKind};
use serde_json::Value;

fn load(dtype: DType) -> Llama {
    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    Llama::from_gguf(&gguf, &LoadOptions { device: Device::Cpu, dtype, format: WeightFormat::Dense }).unwrap()
}

fn input_ids(g: &Value) -> Tensor {
    let ids: Vec<u32> = g["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    Tensor::new(ids, &Device::Cpu).unwrap()
}

/// The reference's deterministic adapter weights (no RNG), computed in f64.
fn deterministic(n_out: usize, n_in: usize, r: usize, dtype: DType) -> (Tensor, Tensor) {
    let a: Vec<f64> = (0..r * n_in).map(|k| 0.02 * (0.1 * k as f64 + 1.0).sin()).collect();
    let b: Vec<f64> = (0..n_out * r).map(|k| 0.02 * (0.1 * k as f64 + 2.0).cos()).collect();
    let a = Tensor::from_vec(a, (r, n_in), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let b = Tensor::from_vec(b, (n_out, r), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    (a, b)
}

/// graft's key `layers.{i}.self_attn.q_proj.lora_A` → the reference key `layers.{i}.q_proj.lora_A`.
fn reference_key(name: &str) -> String {
    name.replace("self_attn.", "").replace("mlp.", "")
}

fn loss(m: &Llama, ids: &Tensor) -> Tensor {
    shifted_mean_nll(&m.forward_train(&ids.unsqueeze(0).unwrap()).unwrap(), ids).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// `norm_tol`: (median, worst) relative difference of the gradient norms; `tensor_tol`: (minimum
/// cosine, maximum relative L2) of the stored gradient tensors, below f64.
fn check_lora(dtype: DType, key: &str, loss_tol: f64, norm_tol: (f64, f64), tensor_tol: (f64, f64), adam_tol: f64) {
    let g = common::golden_json("lora_grads.json");
    let reference = &g["fp64"];
    let ids = input_ids(&g);
    let mut m = load(dtype);
    let spec = LoraSpec {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
        targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            .map(String::from)
            .to_vec(),
    };
    let set = lora::attach_with(&mut m, &spec, |name, (out, inp), clock| {
        // Half-precision models keep f32 master factors, as `lora::attach` does.
        let (a, b) = deterministic(out, inp, 8, lora::master_dtype(dtype));
        LoraLayer::from_tensors(name, &a, &b, spec.scale(), 0.0, clock)
    })
    .unwrap();
    assert_eq!(set.layers.len(), 210);

    let l = loss(&m, &ids);
    let lv = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let want = reference["loss"].as_f64().unwrap();
    assert!(rel(lv, want) <= loss_tol, "{key} loss {lv} vs {want}");

    let grads = l.backward().unwrap();
    let vars = set.named_vars();
    for (name, var) in &vars {
        assert_eq!(var.dtype(), lora::master_dtype(dtype), "{name}");
        assert_eq!(grads.get(var.as_tensor()).unwrap().dtype(), var.dtype(), "{name}: gradient dtype");
    }
    let mut worst = (0.0, String::new());
    let mut rels = Vec::new();
    let mut grad_list = Vec::new();
    for (name, var) in &vars {
        let gt = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = gt
            .to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want =
            reference["grad_norms"][reference_key(name)].as_f64().unwrap_or_else(|| panic!("no reference for {name}"));
        let r = rel(norm, want);
        rels.push(r);
        if r > worst.0 {
            worst = (r, name.clone());
        }
        grad_list.push(gt.clone());
    }
    rels.sort_by(f64::total_cmp);
    let median = rels[rels.len() / 2];
    let p99 = rels[rels.len() * 99 / 100];
    eprintln!(
        "{key}: loss rel {:.2e}, gradient norms rel: median {median:.4}, p99 {p99:.4}, worst {:.4} ({})",
        rel(lv, want),
        worst.0,
        worst.1
    );
    assert!(median <= norm_tol.0, "{key}: median gradient-norm rel diff {median}");
    assert!(worst.0 <= norm_tol.1, "{key}: worst gradient-norm rel diff {} at {}", worst.0, worst.1);

    // Full gradient tensors of layers 0 and 29 (q_proj and down_proj).
    let stored =
        candle_core::safetensors::load(common::golden_dir().join("lora_grads.safetensors"), &Device::Cpu).unwrap();
    for (name, var) in &vars {
        let k = reference_key(name);
        if let Some(want) = stored.get(&k) {
            let got = grads.get(var.as_tensor()).unwrap().to_dtype(DType::F64).unwrap();
            let diff = (&got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            if dtype == DType::F64 {
                assert!(diff <= 1e-9 * scale, "{k}: max |Δ| {diff} vs scale {scale}");
            } else {
                let dot = (&got * want).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
                let n1 = got.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f64>().unwrap();
                let n2 = want.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f64>().unwrap();
                let l2 = (&got - want)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .sqrt()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(
                    dot / (n1 * n2) >= tensor_tol.0 && l2 / n2 <= tensor_tol.1,
                    "{k}: cosine {} rel L2 {}",
                    dot / (n1 * n2),
                    l2 / n2
                );
            }
        }
    }

    // One AdamW step (lr 1e-3), then the loss of the same batch.
    let mut opt = Optimizer::new(OptimizerKind::AdamW(AdamWConfig::default()), vars.clone()).unwrap();
    opt.step(&grad_list, 1e-3).unwrap();
    let after = loss(&m, &ids).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let want = reference["loss_after_one_adamw_step"].as_f64().unwrap();
    assert!(rel(after, want) <= adam_tol, "{key} loss after AdamW {after} vs {want}");
}

#[test]
fn lora_gradients_match_peft_in_f64() {
    check_lora(DType::F64, "fp64", 1e-10, (1e-8, 1e-8), (1.0, 0.0), 1e-8);
}

#[test]
fn lora_gradients_match_peft_in_f32() {
    check_lora(DType::F32, "fp32", 5e-5, (2e-3, 2e-3), (0.9999, 2e-3), 1e-4);
}

/// Mixed precision: the model computes in bf16 (its weights rounded to bf16 too) with f32 master
/// LoRA factors; the f32 gradients stay close to the f64 reference. bf16 keeps 8 significant
/// bits, so the bounds are loose: measured here, the loss is within 0.5 %, the median gradient
/// norm within 2.4 %, the 99th percentile within 25 % and the worst of 420 within 61 %: layer
/// 7's `v_proj` LoRA A, a small-gradient tensor whose bf16 error moves with the order of
/// roundings (36 % with a 2.2 % median before the LM-head loss over vocabulary slices and the
/// attention node, 55 % with a 2.5 % median with the first of them alone).
#[test]
fn lora_gradients_match_peft_in_bf16_with_f32_masters() {
    check_lora(DType::BF16, "bf16", 2e-2, (5e-2, 0.7), (0.9, 0.5), 2e-2);
}

fn check_full(dtype: DType, loss_tol: f64, norm_tol: f64) {
    let g = common::golden_json("lora_grads.json");
    let reference = &g["full_ft"]["fp64"];
    let ids = input_ids(&g);
    let mut m = load(dtype);
    let vars: Vec<(String, Var)> = m.make_trainable(|_| true).unwrap();
    assert_eq!(vars.len(), 272, "every tensor of the tied model is trainable");
    let l = loss(&m, &ids);
    let lv = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    assert!(rel(lv, reference["loss"].as_f64().unwrap()) <= loss_tol, "full-FT loss {lv}");
    let grads = l.backward().unwrap();
    let mut worst = 0f64;
    for (name, want) in reference["grad_norms"].as_object().unwrap() {
        let var = &vars.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no var {name}")).1;
        let gt = grads.get(var.as_tensor()).unwrap();
        let norm = gt
            .to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let r = rel(norm, want.as_f64().unwrap());
        worst = worst.max(r);
        assert!(r <= norm_tol, "{name}: gradient norm {norm} vs {want} (rel {r})");
    }
    eprintln!(
        "full fine-tuning {dtype:?} {:?}: loss rel {:.2e}, worst gradient-norm rel {worst:.4}",
        graft::ops::matmul_precision(),
        rel(lv, reference["loss"].as_f64().unwrap())
    );
    // Every trainable tensor gets a finite, non-zero gradient.
    for (name, var) in &vars {
        let gt = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let n = gt.to_dtype(DType::F64).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(n.is_finite() && n > 0.0, "{name}: gradient sum |g| = {n}");
    }
}

#[test]
fn full_finetuning_gradients_match_transformers_in_f64() {
    check_full(DType::F64, 1e-10, 1e-8);
}

#[test]
fn full_finetuning_gradients_match_transformers_in_f32() {
    check_full(DType::F32, 5e-5, 2e-3);
}

/// `bf16-mixed` precision: an f32 model whose products through frozen weights (base projections
/// in forward and backward, the LM head) take bf16 operands with f32 sums, on CPUs with AVX-512
/// BF16; elsewhere it is the f32 computation and the f32 bounds hold. Measured on an AMD EPYC
/// with AVX-512 BF16: loss within 5.3e-4, gradient norms within 0.39 % (median), 4.3 % (99th
/// percentile) and 7.8 % (worst of 420, layer 7's `v_proj` LoRA A again) of the f64 reference:
/// an f32 model keeps its own weights and activations exact and rounds only the operands of
/// those products, so it lands far closer than the bf16 model above.
#[test]
fn lora_gradients_match_peft_in_bf16_mixed() {
    let mixed = MatmulPrecision::Bf16Mixed;
    match mixed.effective() {
        MatmulPrecision::F32 => check_lora(DType::F32, "bf16-mixed as f32", 5e-5, (2e-3, 2e-3), (0.9999, 2e-3), 1e-4),
        _ => with_matmul_precision(mixed, || {
            check_lora(DType::F32, "bf16-mixed", 2e-3, (1e-2, 0.16), (0.99, 0.15), 5e-3)
        }),
    }
}

/// Full fine-tuning in `bf16-mixed`: every product through a weight, trained or not, in bf16
/// operands with f32 sums, f32 master weights and gradients. Measured: loss within 2.2e-3, the
/// worst gradient norm of the reference's tensors within 1.4 %.
#[test]
fn full_finetuning_gradients_match_transformers_in_bf16_mixed() {
    let mixed = MatmulPrecision::Bf16Mixed;
    match mixed.effective() {
        MatmulPrecision::F32 => check_full(DType::F32, 5e-5, 2e-3),
        _ => with_matmul_precision(mixed, || check_full(DType::F32, 5e-3, 0.03)),
    }
}
