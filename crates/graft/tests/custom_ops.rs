//! Every hand-written backward in `graft::ops` against central finite differences (f64), and
//! every forward against the composed candle expression it replaces.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::values;
use graft::ops::{self, CheckpointMode, FrozenWeight};

const DEV: Device = Device::Cpu;

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(values(n, seed), dims, &DEV).unwrap()
}

/// Checks `d/dv sum(f(v) ⊙ probe)` from backward against central differences for every element
/// of each variable in `vars`.
fn check_grads(vars: &[&Var], f: impl Fn() -> Tensor) {
    let out = f();
    let probe = tensor(out.dims(), 99).to_dtype(out.dtype()).unwrap();
    let objective =
        || (f().to_dtype(DType::F64).unwrap() * probe.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap();
    let grads = objective().backward().unwrap();
    for (vi, var) in vars.iter().enumerate() {
        let analytic: Vec<f64> =
            grads.get(var.as_tensor()).expect("variable has a gradient").flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        let mut worst = 0f64;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            var.set(&Tensor::from_vec(plus, var.as_tensor().dims(), &DEV).unwrap()).unwrap();
            let fp = objective().to_scalar::<f64>().unwrap();
            let mut minus = base.clone();
            minus[i] -= h;
            var.set(&Tensor::from_vec(minus, var.as_tensor().dims(), &DEV).unwrap()).unwrap();
            let fm = objective().to_scalar::<f64>().unwrap();
            let numeric = (fp - fm) / (2.0 * h);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
            worst = worst.max(err);
        }
        var.set(&Tensor::from_vec(base, var.as_tensor().dims(), &DEV).unwrap()).unwrap();
        assert!(worst < 1e-6, "variable {vi}: worst finite-difference error {worst:e}");
    }
}

#[test]
fn frozen_linear_matches_matmul_and_its_input_gradient() {
    let x = Var::from_tensor(&tensor(&[2, 3, 5], 1)).unwrap();
    let w = tensor(&[4, 5], 2);
    let weight = FrozenWeight::Dense(w.clone());
    let y = ops::frozen_linear(x.as_tensor(), &weight).unwrap();
    assert!(common::max_abs_diff(&y, &x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap()) < 1e-12);
    check_grads(&[&x], || ops::frozen_linear(x.as_tensor(), &weight).unwrap());
}

/// Under `bf16-mixed` precision `frozen_linear` and `trained_linear` are graph nodes of their own
/// whose products go through the mixed product; in f64 those products are exact, so central
/// differences check the nodes' backward (input gradient, and the weight's for a trained one).
#[test]
fn mixed_precision_nodes_match_matmul_and_their_gradients() {
    ops::with_matmul_precision(ops::MatmulPrecision::Bf16Mixed, || {
        let x = Var::from_tensor(&tensor(&[2, 9, 5], 3)).unwrap();
        let w = Var::from_tensor(&tensor(&[4, 5], 4)).unwrap();
        let exact = x.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
        let weight = FrozenWeight::Dense(w.as_tensor().clone());
        let y = ops::frozen_linear(x.as_tensor(), &weight).unwrap();
        assert!(common::max_abs_diff(&y, &exact) < 1e-12);
        check_grads(&[&x], || ops::frozen_linear(x.as_tensor(), &weight).unwrap());
        let rows = |x: &Var| x.as_tensor().reshape((18, 5)).unwrap();
        let y = ops::trained_linear(&rows(&x), w.as_tensor()).unwrap();
        assert!(common::max_abs_diff(&y, &exact.reshape((18, 4)).unwrap()) < 1e-12);
        check_grads(&[&x, &w], || ops::trained_linear(&rows(&x), w.as_tensor()).unwrap());
    });
}

#[test]
fn frozen_linear_over_quantized_blocks_matches_the_dequantized_weight() {
    use candle_core::quantized::{GgmlDType, QTensor};
    let w = tensor(&[8, 64], 3).to_dtype(DType::F32).unwrap();
    let q = std::sync::Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1).unwrap());
    let dense = q.dequantize(&DEV).unwrap();
    let x = Var::from_tensor(&tensor(&[3, 64], 4).to_dtype(DType::F32).unwrap()).unwrap();
    let y = ops::frozen_linear(x.as_tensor(), &FrozenWeight::Quantized(q.clone())).unwrap();
    assert!(common::max_abs_diff(&y, &x.as_tensor().matmul(&dense.t().unwrap()).unwrap()) < 1e-4);
    let g = (y * tensor(&[3, 8], 5).to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let expected = tensor(&[3, 8], 5).to_dtype(DType::F32).unwrap().matmul(&dense).unwrap();
    assert!(common::max_abs_diff(g.get(x.as_tensor()).unwrap(), &expected) < 1e-4);
}

#[test]
fn rms_norm_forward_and_both_gradients() {
    let x = Var::from_tensor(&tensor(&[2, 3, 6], 6)).unwrap();
    let w = Var::from_tensor(&(tensor(&[6], 7) + 1.5).unwrap()).unwrap();
    let eps = 1e-5;
    let composed = {
        let r = (x.as_tensor().sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps)
            .unwrap()
            .sqrt()
            .unwrap()
            .recip()
            .unwrap();
        x.as_tensor().broadcast_mul(&r).unwrap().broadcast_mul(w.as_tensor()).unwrap()
    };
    assert!(common::max_abs_diff(&ops::rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap(), &composed) < 1e-12);
    check_grads(&[&x, &w], || ops::rms_norm(x.as_tensor(), w.as_tensor(), eps).unwrap());
    // A frozen weight: only the input gets a gradient, and it is the same one.
    let frozen = w.as_tensor().detach();
    check_grads(&[&x], || ops::rms_norm(x.as_tensor(), &frozen, eps).unwrap());
    // The fused f32 forward agrees with the composed one.
    let x32 = x.as_tensor().to_dtype(DType::F32).unwrap();
    let w32 = w.as_tensor().to_dtype(DType::F32).unwrap();
    let fused = ops::rms_norm(&x32, &w32, eps).unwrap();
    assert!(common::max_abs_diff(&fused, &composed.to_dtype(DType::F32).unwrap()) < 1e-5);
}

#[test]
fn layer_norm_forward_and_its_three_gradients() {
    let x = Var::from_tensor(&(tensor(&[2, 3, 6], 8) * 3.0).unwrap()).unwrap();
    let w = Var::from_tensor(&(tensor(&[6], 9) + 1.5).unwrap()).unwrap();
    let b = Var::from_tensor(&tensor(&[6], 10)).unwrap();
    let eps = 1e-5;
    let composed = {
        let xt = x.as_tensor();
        let centred = xt.broadcast_sub(&xt.mean_keepdim(D::Minus1).unwrap()).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
        centred.broadcast_mul(&inv).unwrap().broadcast_mul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap()
    };
    let op = || ops::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps).unwrap();
    assert!(common::max_abs_diff(&op(), &composed) < 1e-12);
    check_grads(&[&x, &w, &b], op);
    // Frozen weight and bias: only the input gets a gradient, and it is the same one.
    let (fw, fb) = (w.as_tensor().detach(), b.as_tensor().detach());
    check_grads(&[&x], || ops::layer_norm(x.as_tensor(), &fw, &fb, eps).unwrap());
    // A frozen input (the embeddings' LayerNorm): the weight and bias still get theirs.
    let fx = x.as_tensor().detach();
    check_grads(&[&w, &b], || ops::layer_norm(&fx, w.as_tensor(), b.as_tensor(), eps).unwrap());
    // f32 agrees with the f64 values; a weight of the wrong width is refused with both shapes.
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let single = ops::layer_norm(&f32s(x.as_tensor()), &f32s(w.as_tensor()), &f32s(b.as_tensor()), eps).unwrap();
    assert!(common::max_abs_diff(&single, &f32s(&composed)) < 1e-5);
    let e = ops::layer_norm(x.as_tensor(), &tensor(&[5], 11), b.as_tensor(), eps).unwrap_err().to_string();
    assert!(e.contains("weight [5] and bias [6] must both be [6]"), "{e}");
}

#[test]
fn gelu_erf_forward_and_its_exact_gradient() {
    let v: Vec<f64> = (0..30).map(|i| -4.0 + 0.29 * i as f64).collect();
    let x = Var::from_tensor(&Tensor::from_vec(v, (2, 15), &DEV).unwrap()).unwrap();
    let xt = x.as_tensor();
    let composed = ((xt * std::f64::consts::FRAC_1_SQRT_2).unwrap().erf().unwrap() + 1.0)
        .unwrap()
        .mul(&(xt * 0.5).unwrap())
        .unwrap();
    assert!(common::max_abs_diff(&ops::gelu_erf(xt).unwrap(), &composed) < 1e-15);
    check_grads(&[&x], || ops::gelu_erf(x.as_tensor()).unwrap());
    // The f32 forward is candle's inference kernel, value for value.
    let x32 = xt.to_dtype(DType::F32).unwrap();
    assert_eq!(common::max_abs_diff(&ops::gelu_erf(&x32).unwrap(), &x32.gelu_erf().unwrap()), 0.0);
    // At and near 0 the CPU backward's `Φ(x)` is `1/2 + x·φ(0)`: gelu'(x) = 1/2 + 2x·φ(0) + O(x³).
    let near = Var::from_tensor(&Tensor::new(&[0f64, 1e-8, -3e-7, 2e-6], &DEV).unwrap()).unwrap();
    let grads = ops::gelu_erf(near.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f64> = grads.get(&near).unwrap().to_vec1().unwrap();
    let phi0 = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    for (x, gv) in [0f64, 1e-8, -3e-7, 2e-6].iter().zip(&g) {
        assert!((gv - (0.5 + 2.0 * x * phi0)).abs() < 1e-12, "gelu'({x}) = {gv}");
    }
    // The tensor form (bf16) has the same derivative: gelu'(0) = 1/2, gelu'(1) = Φ(1) + φ(1).
    let at = Var::from_tensor(&Tensor::new(&[0f32, 1.0], &DEV).unwrap().to_dtype(DType::BF16).unwrap()).unwrap();
    let grads = ops::gelu_erf(at.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = grads.get(&at).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    assert!((g[0] - 0.5).abs() < 1e-2 && (g[1] - 1.0833).abs() < 1e-2, "{g:?}");
}

#[test]
fn rope_forward_and_input_gradient() {
    let (t, half) = (5, 4);
    let angles: Vec<f64> = (0..t * half).map(|i| (i / half) as f64 * 0.3f64.powi((i % half) as i32)).collect();
    let cos = Tensor::from_vec(angles.iter().map(|a| a.cos()).collect::<Vec<_>>(), (t, half), &DEV).unwrap();
    let sin = Tensor::from_vec(angles.iter().map(|a| a.sin()).collect::<Vec<_>>(), (t, half), &DEV).unwrap();
    let x = Var::from_tensor(&tensor(&[2, 3, t, 2 * half], 8)).unwrap();
    let composed = {
        let xs = x.as_tensor();
        let c = Tensor::cat(&[&cos, &cos], D::Minus1).unwrap();
        let s = Tensor::cat(&[&sin, &sin], D::Minus1).unwrap();
        let x1 = xs.narrow(D::Minus1, 0, half).unwrap();
        let x2 = xs.narrow(D::Minus1, half, half).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        (xs.broadcast_mul(&c).unwrap() + rot.broadcast_mul(&s).unwrap()).unwrap()
    };
    assert!(common::max_abs_diff(&ops::rope(x.as_tensor(), &cos, &sin).unwrap(), &composed) < 1e-12);
    check_grads(&[&x], || ops::rope(x.as_tensor(), &cos, &sin).unwrap());
}

/// The attention node against the composed expression (forward) and finite differences
/// (gradients of q, k and v): two stacked query groups of three new tokens after two earlier
/// positions under a sliding window of three, and without a mask.
#[test]
fn attention_forward_and_gradients() {
    let q = Var::from_tensor(&tensor(&[2, 1, 6, 4], 9)).unwrap();
    let k = Var::from_tensor(&tensor(&[2, 1, 5, 4], 12)).unwrap();
    let v = Var::from_tensor(&tensor(&[2, 1, 5, 4], 13)).unwrap();
    let scale = 0.7;
    let spec = ops::CausalMask { rep: 2, t: 3, offset: 2, window: Some(3) };
    let mask = spec.tensor(DType::F64, &DEV).unwrap().unwrap();
    let row: Vec<f64> = mask.get(2).unwrap().to_vec1().unwrap();
    assert_eq!(row.iter().map(|x| x.is_finite()).collect::<Vec<_>>(), [false, false, true, true, true]);
    for mask_spec in [Some(&spec), None] {
        let scores = (q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap() * scale).unwrap();
        let scores = match mask_spec {
            Some(_) => scores.broadcast_add(&mask).unwrap(),
            None => scores,
        };
        let composed = candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(v.as_tensor()).unwrap();
        for train in [true, false] {
            let fused = ops::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale, mask_spec, train).unwrap();
            assert!(common::max_abs_diff(&fused, &composed) < 1e-12);
        }
        check_grads(&[&q, &k, &v], || {
            ops::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale, mask_spec, true).unwrap()
        });
    }
}

#[test]
fn chunked_lm_head_loss_matches_full_logits_and_its_gradients() {
    // More rows than one chunk, so chunk boundaries are crossed.
    let n = ops::LM_HEAD_CHUNK + 7;
    let (h, v) = (6, 11);
    let hidden = Var::from_tensor(&tensor(&[n, h], 10)).unwrap();
    let w = Var::from_tensor(&tensor(&[v, h], 11)).unwrap();
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask =
        Tensor::from_vec((0..n).map(|i| if i % 5 == 0 { 0f64 } else { 1.0 }).collect::<Vec<_>>(), n, &DEV).unwrap();
    let reference = {
        let logp =
            candle_nn::ops::log_softmax(&hidden.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap(), D::Minus1)
                .unwrap();
        (logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap().neg().unwrap() * &mask).unwrap()
    };
    let trainable = FrozenWeight::Dense(w.as_tensor().clone());
    let fused = ops::lm_head_nll(hidden.as_tensor(), &trainable, &targets, &mask).unwrap();
    assert!(common::max_abs_diff(&fused, &reference) < 1e-12);
    // Full fine-tuning: hidden and weight both get gradients.
    check_grads(&[&hidden, &w], || ops::lm_head_nll(hidden.as_tensor(), &trainable, &targets, &mask).unwrap());
    // A frozen head: only the hidden states do.
    let frozen = FrozenWeight::Dense(w.as_tensor().detach());
    check_grads(&[&hidden], || ops::lm_head_nll(hidden.as_tensor(), &frozen, &targets, &mask).unwrap());
    let grads =
        ops::lm_head_nll(hidden.as_tensor(), &frozen, &targets, &mask).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(w.as_tensor()).is_none());
    let reference_grads = reference.sum_all().unwrap().backward().unwrap();
    assert!(
        common::max_abs_diff(grads.get(hidden.as_tensor()).unwrap(), reference_grads.get(hidden.as_tensor()).unwrap())
            < 1e-12
    );
}

#[test]
fn fused_lora_linear_matches_the_composed_update_and_its_three_gradients() {
    let x = Var::from_tensor(&tensor(&[2, 3, 5], 12)).unwrap();
    let w = tensor(&[4, 5], 13);
    let a = Var::from_tensor(&tensor(&[2, 5], 14)).unwrap();
    let b = Var::from_tensor(&tensor(&[4, 2], 15)).unwrap();
    let scale = 1.5;
    let weight = FrozenWeight::Dense(w.clone());
    let composed = {
        let base = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        let delta = x
            .as_tensor()
            .broadcast_matmul(&a.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_matmul(&b.as_tensor().t().unwrap())
            .unwrap();
        (base + (delta * scale).unwrap()).unwrap()
    };
    let fused = ops::lora_linear(x.as_tensor(), &weight, a.as_tensor(), b.as_tensor(), scale).unwrap();
    assert!(common::max_abs_diff(&fused, &composed) < 1e-12);
    check_grads(&[&x, &a, &b], || {
        ops::lora_linear(x.as_tensor(), &weight, a.as_tensor(), b.as_tensor(), scale).unwrap()
    });
}

#[test]
fn fused_lora_linear_with_input_dropout_matches_the_composed_update_and_its_three_gradients() {
    let x = Var::from_tensor(&tensor(&[2, 3, 5], 22)).unwrap();
    let w = tensor(&[4, 5], 23);
    let a = Var::from_tensor(&tensor(&[2, 5], 24)).unwrap();
    let b = Var::from_tensor(&tensor(&[4, 2], 25)).unwrap();
    let scale = 0.75;
    let weight = FrozenWeight::Dense(w.clone());
    // Every third element dropped, keep = 0.8 (a mask need not match its rate here).
    let mask: Vec<u8> = (0..30).map(|i| u8::from(i % 3 != 1)).collect();
    let dropout =
        ops::InputDropout { keep_mask: Tensor::from_vec(mask.clone(), (2, 3, 5), &Device::Cpu).unwrap(), keep: 0.8 };
    let composed = {
        let m: Vec<f64> = mask.iter().map(|&k| f64::from(k) / 0.8).collect();
        let dropped = (x.as_tensor() * Tensor::from_vec(m, (2, 3, 5), &Device::Cpu).unwrap()).unwrap();
        let base = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        let delta = dropped
            .broadcast_matmul(&a.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_matmul(&b.as_tensor().t().unwrap())
            .unwrap();
        (base + (delta * scale).unwrap()).unwrap()
    };
    let fused =
        || ops::lora_linear_dropout(x.as_tensor(), &weight, a.as_tensor(), b.as_tensor(), scale, &dropout).unwrap();
    assert!(common::max_abs_diff(&fused(), &composed) < 1e-12);
    // Dropout changes the output: the test can tell a mask that is ignored.
    let plain = ops::lora_linear(x.as_tensor(), &weight, a.as_tensor(), b.as_tensor(), scale).unwrap();
    assert!(common::max_abs_diff(&fused(), &plain) > 1e-3);
    check_grads(&[&x, &a, &b], fused);
    let wrong = ops::InputDropout { keep_mask: Tensor::zeros((2, 3, 4), DType::U8, &Device::Cpu).unwrap(), keep: 0.8 };
    assert!(ops::lora_linear_dropout(x.as_tensor(), &weight, a.as_tensor(), b.as_tensor(), scale, &wrong).is_err());
}

/// A small random Llama in f64 with LoRA (dropout on) on every projection, plus its LoRA set.
#[test]
fn depthwise_conv2d_matches_grouped_conv2d_and_its_two_gradients() {
    // Odd sizes, both strides and both kernel sizes EfficientNet uses, a one-pixel output, a
    // one-row output and a stride other than 1 or 2.
    for (h, w, k, stride) in
        [(7, 6, 3, 1), (7, 8, 3, 2), (9, 7, 5, 2), (6, 6, 5, 1), (5, 5, 5, 1), (3, 6, 3, 2), (8, 3, 3, 3)]
    {
        let x = Var::from_tensor(&tensor(&[2, 3, h, w], 30 + h as u64)).unwrap();
        let kernel = Var::from_tensor(&tensor(&[3, 1, k, k], 40 + k as u64)).unwrap();
        let grouped = x.as_tensor().conv2d(kernel.as_tensor(), 0, stride, 1, 3).unwrap();
        let op = ops::depthwise_conv2d(x.as_tensor(), kernel.as_tensor(), stride).unwrap();
        assert_eq!(op.dims(), grouped.dims(), "{h}x{w} k{k} s{stride}");
        assert!(common::max_abs_diff(&op, &grouped) < 1e-12, "{h}x{w} k{k} s{stride}");
        check_grads(&[&x, &kernel], || ops::depthwise_conv2d(x.as_tensor(), kernel.as_tensor(), stride).unwrap());
        // A frozen kernel: only the input gets a gradient, and it is the same one.
        let frozen = kernel.as_tensor().detach();
        check_grads(&[&x], || ops::depthwise_conv2d(x.as_tensor(), &frozen, stride).unwrap());
    }
    // f32 agrees with the f64 values.
    let x = tensor(&[1, 4, 9, 9], 50);
    let kernel = tensor(&[4, 1, 3, 3], 51);
    let exact = ops::depthwise_conv2d(&x, &kernel, 2).unwrap();
    let single =
        ops::depthwise_conv2d(&x.to_dtype(DType::F32).unwrap(), &kernel.to_dtype(DType::F32).unwrap(), 2).unwrap();
    assert!(common::max_abs_diff(&single, &exact.to_dtype(DType::F32).unwrap()) < 1e-5);
    // Kernels that do not fit are refused with the shapes named.
    let e = ops::depthwise_conv2d(&x, &tensor(&[3, 1, 3, 3], 52), 1).unwrap_err().to_string();
    assert!(e.contains("does not fit an input of 4 channels"), "{e}");
    let e = ops::depthwise_conv2d(&x, &tensor(&[4, 1, 11, 3], 53), 1).unwrap_err().to_string();
    assert!(e.contains("kernel 11x3 does not fit an input of 9x9"), "{e}");
    assert!(ops::depthwise_conv2d(&x, &kernel, 0).is_err());
}

#[test]
fn pointwise_conv_matches_conv2d_and_its_two_gradients() {
    let (n, c, o, h, w) = (3, 4, 5, 3, 2);
    let x = Var::from_tensor(&tensor(&[n, c, h * w], 70)).unwrap();
    let weight = Var::from_tensor(&tensor(&[o, c], 71)).unwrap();
    let f = || ops::pointwise_conv(x.as_tensor(), weight.as_tensor()).unwrap();
    let conv = x
        .as_tensor()
        .reshape((n, c, h, w))
        .unwrap()
        .conv2d(&weight.as_tensor().reshape((o, c, 1, 1)).unwrap(), 0, 1, 1, 1)
        .unwrap();
    assert!(common::max_abs_diff(&f(), &conv.reshape((n, o, h * w)).unwrap()) < 1e-12);
    check_grads(&[&x, &weight], f);
    // A frozen weight (LoRA, a probe, the frozen stages): only the input's gradient.
    let frozen = weight.as_tensor().detach();
    check_grads(&[&x], || ops::pointwise_conv(x.as_tensor(), &frozen).unwrap());
    // A frozen input (the first layer of a trained stack): only the weight's.
    let input = x.as_tensor().detach();
    check_grads(&[&weight], || ops::pointwise_conv(&input, weight.as_tensor()).unwrap());
    let e = ops::pointwise_conv(x.as_tensor(), &tensor(&[o, c + 1], 72)).unwrap_err().to_string();
    assert!(e.contains("does not take an input of 4 channels"), "{e}");
}

#[test]
fn batch_norm_train_matches_the_broadcast_form_and_its_three_gradients() {
    let x = Var::from_tensor(&tensor(&[3, 2, 3, 2], 80)).unwrap();
    let weight = Var::from_tensor(&tensor(&[2], 81)).unwrap();
    let bias = Var::from_tensor(&tensor(&[2], 82)).unwrap();
    let eps = 1e-3;
    let f = || ops::batch_norm_train(x.as_tensor(), weight.as_tensor(), bias.as_tensor(), eps).unwrap().0;
    let col = |t: &Tensor| t.reshape((1, 2, 1, 1)).unwrap();
    let xt = x.as_tensor();
    let mean = xt.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let centred = xt.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    let composed = centred
        .broadcast_div(&(var.clone() + eps).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&col(weight.as_tensor()))
        .unwrap()
        .broadcast_add(&col(bias.as_tensor()))
        .unwrap();
    assert!(common::max_abs_diff(&f(), &composed) < 1e-12);
    let stats = ops::batch_norm_train(xt, weight.as_tensor(), bias.as_tensor(), eps).unwrap().1;
    assert!(common::max_abs_diff(&stats.mean, &mean.flatten_all().unwrap()) < 1e-12);
    assert!(common::max_abs_diff(&stats.var, &var.flatten_all().unwrap()) < 1e-12, "the biased variance");
    check_grads(&[&x, &weight, &bias], f);
    // A frozen scale and shift: the input's gradient alone, the same one.
    let (w, b) = (weight.as_tensor().detach(), bias.as_tensor().detach());
    check_grads(&[&x], || ops::batch_norm_train(x.as_tensor(), &w, &b, eps).unwrap().0);
    let e = ops::batch_norm_train(xt, &tensor(&[3], 83), &b, eps).unwrap_err().to_string();
    assert!(e.contains("must both be [2]"), "{e}");
}

#[test]
fn relu6_clamps_and_passes_the_gradient_strictly_inside() {
    // Values clear of the kinks for the finite differences, on both sides of both.
    let v: Vec<f64> = (0..24).map(|i| -3.0 + 0.43 * i as f64).collect();
    let x = Var::from_tensor(&Tensor::from_vec(v, (2, 3, 4), &DEV).unwrap()).unwrap();
    let clamped = x.as_tensor().clamp(0f64, 6f64).unwrap();
    assert_eq!(common::max_abs_diff(&ops::relu6(x.as_tensor()).unwrap(), &clamped), 0.0);
    check_grads(&[&x], || ops::relu6(x.as_tensor()).unwrap());
    // At the kinks themselves no gradient passes (PyTorch's hardtanh rule): the CPU kernel (f32,
    // f64) and the tensor form (bf16) alike.
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        let edges =
            Var::from_tensor(&Tensor::new(&[0f64, 6.0, 3.0, -1.0, 7.0], &DEV).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
        let grads = ops::relu6(edges.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = grads.get(&edges).unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        assert_eq!(g, [0.0, 0.0, 1.0, 0.0, 0.0], "{dtype:?}");
    }
    // A NaN stays a NaN (the trainer's divergence check must see it).
    let nan = Tensor::new(&[f32::NAN, 2.0], &DEV).unwrap();
    let out: Vec<f32> = ops::relu6(&nan).unwrap().to_vec1().unwrap();
    assert!(out[0].is_nan() && out[1] == 2.0, "{out:?}");
}

#[test]
fn channel_affine_matches_the_broadcast_form_and_its_three_gradients() {
    let x = Var::from_tensor(&tensor(&[2, 3, 4, 5], 60)).unwrap();
    let scale = Var::from_tensor(&tensor(&[3], 61)).unwrap();
    let shift = Var::from_tensor(&tensor(&[3], 62)).unwrap();
    let f = || ops::channel_affine(x.as_tensor(), scale.as_tensor(), shift.as_tensor()).unwrap();
    let col = |t: &Tensor| t.reshape((1, 3, 1, 1)).unwrap();
    let composed =
        x.as_tensor().broadcast_mul(&col(scale.as_tensor())).unwrap().broadcast_add(&col(shift.as_tensor())).unwrap();
    assert!(common::max_abs_diff(&f(), &composed) < 1e-15);
    check_grads(&[&x, &scale, &shift], f);
    // Fixed statistics (a frozen batch norm of a trained layer): only the input's gradient.
    let (s, t) = (scale.as_tensor().detach(), shift.as_tensor().detach());
    check_grads(&[&x], || ops::channel_affine(x.as_tensor(), &s, &t).unwrap());
    let sum: Vec<f64> = ops::channel_sum(x.as_tensor()).unwrap().to_vec1().unwrap();
    let expected: Vec<f64> = x.as_tensor().sum((0, 2, 3)).unwrap().to_vec1().unwrap();
    assert!(sum.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-12));
    let e = ops::channel_affine(x.as_tensor(), &tensor(&[4], 63), &t).unwrap_err().to_string();
    assert!(e.contains("must both be [3]"), "{e}");
}

/// A 6-block model (nested checkpointing makes segments of two blocks) with LoRA (dropout 0.1)
/// on every projection, and with `full` some weights trained too.
fn tiny_lora_model(
    checkpointing: Option<graft::ops::CheckpointMode>,
    full: bool,
) -> (graft::models::llama::Llama, Vec<(String, Var)>, graft::adapters::lora::LoraSet) {
    use graft::models::llama::random::{smollm2_135m_config, RandomWeights};
    use graft::models::llama::{Llama, LoadOptions};
    let mut cfg = smollm2_135m_config();
    cfg.vocab_size = 97;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    cfg.num_hidden_layers = 6;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = Some(8);
    cfg.max_position_embeddings = 64;
    let opts = LoadOptions { dtype: DType::F64, ..LoadOptions::default() };
    let mut model = Llama::load(cfg.clone(), &RandomWeights::new(cfg, 3), &opts).unwrap();
    let spec =
        graft::adapters::lora::LoraSpec { r: 4, alpha: 8.0, dropout: 0.1, rslora: false, targets: vec!["*".into()] };
    let set = graft::adapters::lora::attach(&mut model, &spec, 5).unwrap();
    let mut vars = set.named_vars();
    // PEFT's B = 0 would leave every A without gradient: give B values so both factors train.
    for (i, (name, var)) in vars.iter().enumerate() {
        if name.ends_with("lora_B") {
            var.set(&(tensor(var.as_tensor().dims(), 100 + i as u64) * 0.1).unwrap()).unwrap();
        }
    }
    if full {
        vars.extend(model.make_trainable(|n| n.contains("layernorm") || n.contains("mlp.up_proj")).unwrap());
    }
    model.set_gradient_checkpointing(checkpointing.is_some());
    model.set_checkpoint_mode(checkpointing.unwrap_or_default());
    (model, vars, set)
}

#[test]
fn gradient_checkpointing_gives_the_same_loss_and_gradients() {
    use graft::models::llama::Pass;
    use graft::train::step::LossSum;
    let ids = Tensor::from_vec((0..2 * 12).map(|i| (i * 13 % 97) as u32).collect::<Vec<_>>(), (2, 12), &DEV).unwrap();
    let targets =
        Tensor::from_vec((0..2 * 12).map(|i| (i * 7 % 97) as u32).collect::<Vec<_>>(), (2, 12), &DEV).unwrap();
    let mask = Tensor::ones((2, 12), DType::F64, &DEV).unwrap();
    for full in [false, true] {
        let mut results = Vec::new();
        for checkpointing in [None, Some(CheckpointMode::Blocks), Some(CheckpointMode::Nested)] {
            let (model, vars, set) = tiny_lora_model(checkpointing, full);
            set.clock.set_training(true);
            set.clock.set_step(7);
            let nll = model.token_nll(&ids, &targets, &mask, Pass::Train).unwrap();
            let loss = LossSum { sum: nll.sum_all().unwrap(), count: 24, sink: model.grad_sink() };
            let mut grads = loss.sum.backward().unwrap();
            if let Some(sink) = &loss.sink {
                sink.drain_into(&mut grads).unwrap();
            }
            let per_var: Vec<Tensor> = vars
                .iter()
                .map(|(n, v)| grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{n} has no gradient")).clone())
                .collect();
            results.push((loss.sum.to_scalar::<f64>().unwrap(), per_var));
        }
        let (plain_loss, plain) = &results[0];
        assert!(!plain.is_empty());
        for ((ckpt_loss, ckpt), mode) in results[1..].iter().zip(["blocks", "nested"]) {
            // Nested checkpointing sums each block's input gradient over sequences, an order that
            // can move the last bits.
            assert!((plain_loss - ckpt_loss).abs() <= 1e-12 * plain_loss.abs(), "{mode}: {plain_loss} vs {ckpt_loss}");
            for (a, b) in plain.iter().zip(ckpt) {
                let scale = a
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(scale > 0.0, "a trainable tensor got an all-zero gradient");
                assert!(
                    common::max_abs_diff(a, b) <= 1e-12 * scale.max(1.0),
                    "{mode}: checkpointed gradient differs (full = {full})"
                );
            }
        }
    }
}

/// The LM head runs only on supervised rows: the NLL of those rows, and every gradient, equal
/// the all-rows NLL weighted by the mask.
#[test]
fn nll_of_supervised_rows_equals_the_masked_all_rows_nll() {
    use graft::models::llama::Pass;
    let ids = Tensor::from_vec((0..2 * 12).map(|i| (i * 13 % 97) as u32).collect::<Vec<_>>(), (2, 12), &DEV).unwrap();
    let targets =
        Tensor::from_vec((0..2 * 12).map(|i| (i * 7 % 97) as u32).collect::<Vec<_>>(), (2, 12), &DEV).unwrap();
    let ones = Tensor::ones((2, 12), DType::F64, &DEV).unwrap();
    let partial =
        Tensor::from_vec((0..24).map(|i| if i % 12 >= 7 { 1.0 } else { 0.0 }).collect::<Vec<f64>>(), (2, 12), &DEV)
            .unwrap();
    for checkpointing in [None, Some(CheckpointMode::Blocks)] {
        let (model, vars, _set) = tiny_lora_model(checkpointing, true);
        let grads_of = |loss: &Tensor| {
            let mut g = loss.backward().unwrap();
            if let Some(sink) = model.grad_sink() {
                sink.drain_into(&mut g).unwrap();
            }
            vars.iter().map(|(_, v)| g.get(v.as_tensor()).unwrap().clone()).collect::<Vec<_>>()
        };
        let all_rows = model.token_nll(&ids, &targets, &ones, Pass::Train).unwrap();
        assert_eq!(all_rows.dims(), [24]);
        let want = (all_rows * partial.flatten_all().unwrap()).unwrap().sum_all().unwrap();
        let got = model.token_nll(&ids, &targets, &partial, Pass::Train).unwrap();
        assert_eq!(got.dims(), [10], "only the 10 supervised rows go through the head");
        let got = got.sum_all().unwrap();
        let (w, g) = (want.to_scalar::<f64>().unwrap(), got.to_scalar::<f64>().unwrap());
        assert!((w - g).abs() <= 1e-12 * w.abs(), "{w} vs {g}");
        for (a, b) in grads_of(&want).iter().zip(grads_of(&got)) {
            let scale = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
            assert!(
                common::max_abs_diff(a, &b) <= 1e-12 * scale.max(1.0),
                "gradients differ (checkpointing = {checkpointing:?})"
            );
        }
    }
}

/// A small random Gemma 3 in f64: head width 16 with 2 query heads and 1 KV head (≠ hidden /
/// heads), a sliding window of 3 positions in layer 0 and a global layer 1 (its own RoPE base),
/// norm vectors set away from 1 so q/k and output norms matter.
fn tiny_gemma3(window: usize) -> graft::models::llama::Llama {
    use graft::models::llama::random::{smollm2_135m_config, RandomWeights};
    use graft::models::llama::{Family, Gemma3Params, Llama, LoadOptions};
    let mut cfg = smollm2_135m_config();
    cfg.vocab_size = 61;
    cfg.hidden_size = 24;
    cfg.intermediate_size = 40;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 2;
    cfg.num_key_value_heads = 1;
    cfg.head_dim = Some(16);
    cfg.max_position_embeddings = 32;
    cfg.rope_theta = 1e6;
    cfg.family = Family::Gemma3(Gemma3Params { global_every: 2, ..Gemma3Params::with_window(window, 16) });
    let opts = LoadOptions { dtype: DType::F64, ..LoadOptions::default() };
    let mut model = Llama::load(cfg.clone(), &RandomWeights::new(cfg, 11), &opts).unwrap();
    for (i, (_, var)) in model.make_trainable(|n| n.contains("norm")).unwrap().into_iter().enumerate() {
        let shifted = tensor(var.as_tensor().dims(), 200 + i as u64).affine(0.5, 1.0).unwrap();
        var.set(&shifted).unwrap();
    }
    model
}

/// The Gemma 3 pieces on the training path (q/k norms before RoPE, norms after attention and
/// MLP, GELU-tanh gate, windowed causal softmax with scale 1/√query_pre_attn_scalar, scaled
/// embeddings) give gradients equal to finite differences, for every norm and the layer-0 gate.
#[test]
fn gemma3_block_gradients_match_finite_differences() {
    use graft::models::Model;
    let mut model = tiny_gemma3(3);
    let vars: Vec<Var> = model
        .make_trainable(|n| n.contains("norm") || n == "model.layers.0.mlp.gate_proj.weight")
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(vars.len(), 2 * 6 + 1 + 1);
    let ids = Tensor::new(&[[3u32, 17, 5, 42, 8, 29, 11]], &DEV).unwrap();
    let refs: Vec<&Var> = vars.iter().collect();
    check_grads(&refs, || model.forward_train(&ids).unwrap());
}

/// Training path, full inference and token-by-token KV-cached decoding agree on a sequence three
/// times the sliding window, and the window changes the result (it is not ignored).
#[test]
fn gemma3_sliding_window_holds_on_every_path() {
    use graft::models::Model;
    let model = tiny_gemma3(3);
    let ids: Vec<u32> = (0..9).map(|i| (i * 7 % 61) as u32).collect();
    let x = Tensor::new(ids.as_slice(), &DEV).unwrap().unsqueeze(0).unwrap();
    let full = model.forward_infer(&x, &mut model.new_cache()).unwrap().squeeze(0).unwrap();
    let train = model.forward_train(&x).unwrap().squeeze(0).unwrap();
    assert!(common::max_abs_diff(&full, &train) <= 1e-12);
    let mut cache = model.new_cache();
    for (i, &id) in ids.iter().enumerate() {
        let one = Tensor::new(&[[id]], &DEV).unwrap();
        let row = model.forward_infer_last(&one, &mut cache).unwrap().squeeze(0).unwrap();
        assert!(common::max_abs_diff(&row, &full.get(i).unwrap()) <= 1e-12, "position {i}");
    }
    let wide = tiny_gemma3(16);
    let wide_full = wide.forward_infer(&x, &mut wide.new_cache()).unwrap().squeeze(0).unwrap();
    assert!(common::max_abs_diff(&full.narrow(0, 0, 3).unwrap(), &wide_full.narrow(0, 0, 3).unwrap()) <= 1e-12);
    assert!(common::max_abs_diff(&full.get(8).unwrap(), &wide_full.get(8).unwrap()) > 1e-6);
}

/// Logits `[1, 3]` whose softmax is exactly `probs` (their logarithms).
fn logits_of(probs: [f64; 3]) -> Tensor {
    Tensor::from_vec(probs.iter().map(|p| p.ln()).collect::<Vec<_>>(), (1, 3), &DEV).unwrap()
}

#[test]
fn distillation_divergences_equal_hand_computed_values() {
    use ops::Divergence::*;
    // Student q = (0.5, 0.3, 0.2), teacher p = (0.2, 0.5, 0.3); values from the definitions:
    // KL(p‖q) = Σ p ln(p/q), the JSD mixture m = β p + (1 − β) q, the skew mixtures α p + (1 − α) q
    // (skew KL) and (1 − α) p + α q (skew reverse KL).
    let (zs, zt) = (logits_of([0.5, 0.3, 0.2]), logits_of([0.2, 0.5, 0.3]));
    let cases = [
        (ForwardKl, 1.0, 0.193_794_197_940_613_62),
        (ReverseKl, 1.0, 0.223_804_657_185_647_52),
        (Jsd { beta: 0.5 }, 1.0, 0.050_874_612_539_598_34),
        (Jsd { beta: 0.25 }, 1.0, 0.037_065_173_559_481_066),
        (SkewKl { alpha: 0.1 }, 1.0, 0.159_262_968_864_615_88),
        (SkewReverseKl { alpha: 0.1 }, 1.0, 0.172_950_594_689_280_76),
        // At T = 2 both distributions become ∝ √p and ∝ √q: KL of those, times T² = 4.
        (ForwardKl, 2.0, 0.203_887_895_364_482_2 / 4.0),
    ];
    for (d, t, want) in cases {
        let got: f64 = ops::divergence(&zs, &zt, d, t).unwrap().squeeze(0).unwrap().to_scalar().unwrap();
        assert!((got - want).abs() < 1e-14, "{d:?} at T={t}: {got} vs {want}");
    }
}

#[test]
fn jsd_and_skew_endpoints_are_the_plain_kls() {
    use ops::Divergence::*;
    let (zs, zt) = (tensor(&[5, 9], 40), (tensor(&[5, 9], 41) * 3.0).unwrap());
    let div = |d| ops::divergence(&zs, &zt, d, 1.5).unwrap();
    let (fkl, rkl) = (div(ForwardKl), div(ReverseKl));
    assert!(common::max_abs_diff(&fkl, &rkl) > 1e-3, "the test distributions must tell the two apart");
    for (d, plain) in [
        (Jsd { beta: 0.0 }, &fkl),
        (Jsd { beta: 1.0 }, &rkl),
        (SkewKl { alpha: 0.0 }, &fkl),
        (SkewReverseKl { alpha: 0.0 }, &rkl),
    ] {
        assert!(common::max_abs_diff(&div(d), plain) < 1e-13, "{d:?}");
    }
    // Inside the range the mixture formulas are in force, and the JSD is symmetric at β = 1/2.
    let swapped = ops::divergence(&zt, &zs, Jsd { beta: 0.5 }, 1.5).unwrap();
    assert!(common::max_abs_diff(&div(Jsd { beta: 0.5 }), &swapped) < 1e-13);
}

const DIVERGENCES: [ops::Divergence; 5] = [
    ops::Divergence::ForwardKl,
    ops::Divergence::ReverseKl,
    ops::Divergence::Jsd { beta: 0.3 },
    ops::Divergence::SkewKl { alpha: 0.1 },
    ops::Divergence::SkewReverseKl { alpha: 0.2 },
];

#[test]
fn chunked_distillation_loss_matches_whole_logits_and_its_gradients() {
    // More rows than one chunk; student and teacher of different widths.
    let n = ops::LM_HEAD_CHUNK + 7;
    let (h, ht, v) = (6, 4, 11);
    let hidden = Var::from_tensor(&tensor(&[n, h], 30)).unwrap();
    let w = Var::from_tensor(&tensor(&[v, h], 31)).unwrap();
    let teacher_hidden = tensor(&[n, ht], 32);
    let teacher_w = FrozenWeight::Dense((tensor(&[v, ht], 33) * 2.0).unwrap());
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask =
        Tensor::from_vec((0..n).map(|i| if i % 5 == 0 { 0f64 } else { 1.0 }).collect::<Vec<_>>(), n, &DEV).unwrap();
    for divergence in DIVERGENCES {
        let spec = ops::KdSpec { divergence, temperature: 2.0, kd_ratio: 0.3 };
        let trainable = FrozenWeight::Dense(w.as_tensor().clone());
        let rows = ops::lm_head_kd(hidden.as_tensor(), &trainable, &teacher_hidden, &teacher_w, &targets, &mask, &spec)
            .unwrap();
        // The reference holds the whole [n × V] logits of both models.
        let zs = hidden.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let zt = teacher_hidden.matmul(&teacher_w.dense(DType::F64).unwrap().t().unwrap()).unwrap();
        let logp = candle_nn::ops::log_softmax(&zs, D::Minus1).unwrap();
        let ce = (logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap().neg().unwrap() * &mask)
            .unwrap();
        let kd = ((ops::divergence(&zs, &zt, divergence, 2.0).unwrap() * 4.0).unwrap() * &mask).unwrap();
        let loss = ((&ce * 0.7).unwrap() + (&kd * 0.3).unwrap()).unwrap();
        assert!(common::max_abs_diff(&rows.ce, &ce) < 1e-12, "{divergence:?}");
        assert!(common::max_abs_diff(&rows.kd, &kd) < 1e-12, "{divergence:?}");
        assert!(common::max_abs_diff(&rows.loss, &loss) < 1e-12, "{divergence:?}");
        // Full fine-tuning: hidden states and head both get gradients; a frozen head: only the
        // hidden states. The teacher never does.
        check_grads(&[&hidden, &w], || {
            ops::lm_head_kd(hidden.as_tensor(), &trainable, &teacher_hidden, &teacher_w, &targets, &mask, &spec)
                .unwrap()
                .loss
        });
        let frozen = FrozenWeight::Dense(w.as_tensor().detach());
        check_grads(&[&hidden], || {
            ops::lm_head_kd(hidden.as_tensor(), &frozen, &teacher_hidden, &teacher_w, &targets, &mask, &spec)
                .unwrap()
                .loss
        });
    }
}

#[test]
fn distillation_loss_at_kd_ratio_zero_is_the_plain_loss_bit_for_bit() {
    let n = ops::LM_HEAD_CHUNK + 7;
    let (h, v) = (8, 13);
    let f32s = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let hidden = Var::from_tensor(&f32s(tensor(&[n, h], 50))).unwrap();
    let head = FrozenWeight::Dense(f32s(tensor(&[v, h], 51)));
    let teacher_hidden = f32s(tensor(&[n, h], 52));
    let teacher_w = FrozenWeight::Dense(f32s(tensor(&[v, h], 53)));
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 5) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask = f32s(Tensor::from_vec((0..n).map(|i| (i % 3 != 0) as u8 as f64).collect::<Vec<_>>(), n, &DEV).unwrap());
    let spec = ops::KdSpec { divergence: ops::Divergence::ReverseKl, temperature: 2.0, kd_ratio: 0.0 };
    let kd = ops::lm_head_kd(hidden.as_tensor(), &head, &teacher_hidden, &teacher_w, &targets, &mask, &spec).unwrap();
    let plain = ops::lm_head_nll(hidden.as_tensor(), &head, &targets, &mask).unwrap();
    assert_eq!(kd.loss.to_vec1::<f32>().unwrap(), plain.to_vec1::<f32>().unwrap());
    assert!(kd.kd.sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "the KD term is still measured");
    let grad = |t: &Tensor| t.sum_all().unwrap().backward().unwrap().get(hidden.as_tensor()).unwrap().clone();
    let (a, b) = (grad(&kd.loss), grad(&plain));
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn uld_distance_equals_hand_computed_values_across_vocabularies() {
    // Student q = (0.5, 0.3, 0.2) over 3 tokens, teacher p = (0.1, 0.6, 0.2, 0.1) over 4. Sorted:
    // q↓ = (0.5, 0.3, 0.2, 0) once zero-padded, p↓ = (0.6, 0.2, 0.1, 0.1); the distance is
    // Σ_{i<k} |q↓_i − p↓_i| = 0.1 per compared rank here.
    let ln = |p: &[f64]| Tensor::from_vec(p.iter().map(|p| p.ln()).collect::<Vec<_>>(), (1, p.len()), &DEV).unwrap();
    let (zs, zt) = (ln(&[0.5, 0.3, 0.2]), ln(&[0.1, 0.6, 0.2, 0.1]));
    for (top_k, want) in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (50, 0.4)] {
        let d = ops::Divergence::Uld { top_k };
        let got: f64 = ops::divergence(&zs, &zt, d, 1.0).unwrap().squeeze(0).unwrap().to_scalar().unwrap();
        assert!((got - want).abs() < 1e-14, "top_k {top_k}: {got} vs {want}");
        // The sorted distance does not depend on which token carries which probability.
        let swapped = ops::divergence(&ln(&[0.2, 0.5, 0.3]), &zt, d, 1.0).unwrap();
        assert!((swapped.squeeze(0).unwrap().to_scalar::<f64>().unwrap() - want).abs() < 1e-14);
    }
}

#[test]
fn chunked_uld_loss_matches_whole_logits_and_its_gradients_across_vocabularies() {
    // More rows than one chunk; a student vocabulary of 11 and a teacher one of 17, compared over
    // fewer ranks than either (4) and over more than both (20: the student side zero-padded).
    let n = ops::LM_HEAD_CHUNK + 7;
    let (h, ht, v, vt) = (6, 4, 11, 17);
    let hidden = Var::from_tensor(&tensor(&[n, h], 60)).unwrap();
    let w = Var::from_tensor(&tensor(&[v, h], 61)).unwrap();
    let teacher_hidden = tensor(&[n, ht], 62);
    let teacher_w = FrozenWeight::Dense((tensor(&[vt, ht], 63) * 2.0).unwrap());
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask =
        Tensor::from_vec((0..n).map(|i| if i % 5 == 0 { 0f64 } else { 1.0 }).collect::<Vec<_>>(), n, &DEV).unwrap();
    let trainable = FrozenWeight::Dense(w.as_tensor().clone());
    for top_k in [4, 20] {
        let spec = ops::KdSpec { divergence: ops::Divergence::Uld { top_k }, temperature: 2.0, kd_ratio: 0.3 };
        let kd_of = |head: &FrozenWeight| {
            ops::lm_head_kd(hidden.as_tensor(), head, &teacher_hidden, &teacher_w, &targets, &mask, &spec).unwrap()
        };
        let rows = kd_of(&trainable);
        let zs = hidden.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let zt = teacher_hidden.matmul(&teacher_w.dense(DType::F64).unwrap().t().unwrap()).unwrap();
        let kd = ((ops::divergence(&zs, &zt, spec.divergence, 2.0).unwrap() * 4.0).unwrap() * &mask).unwrap();
        assert!(common::max_abs_diff(&rows.kd, &kd) < 1e-12, "top_k {top_k}");
        assert!(kd.sum_all().unwrap().to_scalar::<f64>().unwrap() > 1.0, "a distance to learn from");
        check_grads(&[&hidden, &w], || kd_of(&trainable).loss);
        let frozen = FrozenWeight::Dense(w.as_tensor().detach());
        check_grads(&[&hidden], || kd_of(&frozen).loss);
    }
    // A same-vocabulary divergence still refuses two vocabularies.
    let spec = ops::KdSpec { divergence: ops::Divergence::ForwardKl, temperature: 1.0, kd_ratio: 0.5 };
    assert!(
        ops::lm_head_kd(hidden.as_tensor(), &trainable, &teacher_hidden, &teacher_w, &targets, &mask, &spec).is_err()
    );
}

#[test]
fn uld_loss_on_paired_rows_only_matches_the_reference_and_its_gradients() {
    // Cross-tokenizer pairing: the KD term counts where `kd_mask` does (every third supervised
    // row here), the cross-entropy wherever `mask` does.
    let n = ops::LM_HEAD_CHUNK + 7;
    let (h, ht, v, vt) = (6, 4, 11, 17);
    let hidden = Var::from_tensor(&tensor(&[n, h], 80)).unwrap();
    let w = Var::from_tensor(&tensor(&[v, h], 81)).unwrap();
    let teacher_hidden = tensor(&[n, ht], 82);
    let teacher_w = FrozenWeight::Dense((tensor(&[vt, ht], 83) * 2.0).unwrap());
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let flags = |f: fn(usize) -> bool| Tensor::from_vec((0..n).map(|i| f(i) as u8 as f64).collect::<Vec<_>>(), n, &DEV);
    let mask = flags(|i| i % 5 != 0).unwrap();
    let kd_mask = (flags(|i| i % 3 == 0).unwrap() * &mask).unwrap();
    let spec = ops::KdSpec { divergence: ops::Divergence::Uld { top_k: 5 }, temperature: 2.0, kd_ratio: 0.3 };
    let run = |head: &FrozenWeight| {
        ops::lm_head_kd_masked(
            hidden.as_tensor(),
            head,
            &teacher_hidden,
            &teacher_w,
            &targets,
            &mask,
            Some(&kd_mask),
            &spec,
        )
        .unwrap()
    };
    let trainable = FrozenWeight::Dense(w.as_tensor().clone());
    let rows = run(&trainable);
    let whole =
        ops::lm_head_kd(hidden.as_tensor(), &trainable, &teacher_hidden, &teacher_w, &targets, &mask, &spec).unwrap();
    assert!(common::max_abs_diff(&rows.ce, &whole.ce) < 1e-12);
    let kd = (&whole.kd * &kd_mask).unwrap();
    assert!(common::max_abs_diff(&rows.kd, &kd) < 1e-12);
    let loss = ((&whole.ce * 0.7).unwrap() + (&kd * 0.3).unwrap()).unwrap();
    assert!(common::max_abs_diff(&rows.loss, &loss) < 1e-12);
    assert!(kd.sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.1, "a distance to learn from");
    check_grads(&[&hidden, &w], || run(&trainable).loss);
    let frozen = FrozenWeight::Dense(w.as_tensor().detach());
    check_grads(&[&hidden], || run(&frozen).loss);
}

#[test]
fn sparse_teacher_at_full_k_is_the_dense_teacher() {
    let n = ops::LM_HEAD_CHUNK + 3;
    let (h, ht, v) = (5, 4, 9);
    let hidden = Var::from_tensor(&tensor(&[n, h], 60)).unwrap();
    let head = FrozenWeight::Dense(tensor(&[v, h], 61));
    let teacher_hidden = tensor(&[n, ht], 62);
    let teacher_w = FrozenWeight::Dense((tensor(&[v, ht], 63) * 2.0).unwrap());
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 4) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask = Tensor::from_vec((0..n).map(|i| (i % 4 != 0) as u8 as f64).collect::<Vec<_>>(), n, &DEV).unwrap();
    for divergence in DIVERGENCES {
        let spec = ops::KdSpec { divergence, temperature: 1.5, kd_ratio: 0.6 };
        let sparse = ops::teacher_top_k(&teacher_hidden, &teacher_w, v, 1.5).unwrap();
        let a = ops::lm_head_kd_sparse(hidden.as_tensor(), &head, &sparse, &targets, &mask, &spec).unwrap();
        let b =
            ops::lm_head_kd(hidden.as_tensor(), &head, &teacher_hidden, &teacher_w, &targets, &mask, &spec).unwrap();
        assert!(common::max_abs_diff(&a.kd, &b.kd) < 1e-12, "{divergence:?}");
        assert!(common::max_abs_diff(&a.loss, &b.loss) < 1e-12, "{divergence:?}");
    }
}

/// The cache keeps each row's `k` most probable ids and one remainder, and the loss is the
/// divergence between the distributions coarsened to those `k + 1` outcomes: forward and reverse
/// KL computed here by hand from the full teacher and student match the op, and a student equal
/// to the teacher scores 0 at any `k`.
#[test]
fn sparse_teacher_keeps_the_top_k_and_scores_the_rest_as_one_bucket() {
    let (n, h, v, k, t) = (3, 4, 7, 2, 2.0);
    let teacher_hidden = tensor(&[n, h], 70);
    let teacher_w = FrozenWeight::Dense((tensor(&[v, h], 71) * 3.0).unwrap());
    let hidden = tensor(&[n, h], 72);
    let head = FrozenWeight::Dense(tensor(&[v, h], 73));
    let sparse = ops::teacher_top_k(&teacher_hidden, &teacher_w, k, t).unwrap();
    let softmax = |x: &Tensor, w: &FrozenWeight| -> Vec<Vec<f64>> {
        let z = (x.matmul(&w.dense(DType::F64).unwrap().t().unwrap()).unwrap() / t).unwrap();
        candle_nn::ops::softmax_last_dim(&z).unwrap().to_vec2().unwrap()
    };
    let (p, q) = (softmax(&teacher_hidden, &teacher_w), softmax(&hidden, &head));
    let ids: Vec<Vec<u32>> = sparse.ids.to_vec2().unwrap();
    let targets = Tensor::zeros(n, DType::U32, &DEV).unwrap();
    let mask = Tensor::ones(n, DType::F64, &DEV).unwrap();
    for (divergence, reverse) in [(ops::Divergence::ForwardKl, false), (ops::Divergence::ReverseKl, true)] {
        let spec = ops::KdSpec { divergence, temperature: t, kd_ratio: 1.0 };
        let got: Vec<f64> =
            ops::lm_head_kd_sparse(&hidden, &head, &sparse, &targets, &mask, &spec).unwrap().kd.to_vec1().unwrap();
        for r in 0..n {
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| p[r][b].total_cmp(&p[r][a]));
            assert_eq!(ids[r], order[..k].iter().map(|&i| i as u32).collect::<Vec<_>>());
            let bucket = |d: &[f64]| -> Vec<f64> {
                let mut b: Vec<f64> = order[..k].iter().map(|&i| d[i]).collect();
                b.push(order[k..].iter().map(|&i| d[i]).sum());
                b
            };
            let (pb, qb) = (bucket(&p[r]), bucket(&q[r]));
            let (a, b) = if reverse { (&qb, &pb) } else { (&pb, &qb) };
            let want = t * t * a.iter().zip(b).map(|(x, y)| x * (x / y).ln()).sum::<f64>();
            assert!((got[r] - want).abs() < 1e-12, "{divergence:?} row {r}: {} vs {want}", got[r]);
        }
        // The teacher as its own student: 0, though the top 2 of 7 ids miss part of the mass.
        let same = ops::lm_head_kd_sparse(&teacher_hidden, &teacher_w, &sparse, &targets, &mask, &spec).unwrap();
        assert!(same.kd.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap() < 1e-13, "{divergence:?}");
    }
}

#[test]
fn sparse_teacher_loss_matches_its_reconstruction_and_its_gradients() {
    let n = ops::LM_HEAD_CHUNK + 5;
    let (h, ht, v, k) = (6, 4, 11, 3);
    let hidden = Var::from_tensor(&tensor(&[n, h], 80)).unwrap();
    let w = Var::from_tensor(&tensor(&[v, h], 81)).unwrap();
    let teacher_hidden = tensor(&[n, ht], 82);
    let teacher_w = FrozenWeight::Dense((tensor(&[v, ht], 83) * 2.0).unwrap());
    let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<_>>(), n, &DEV).unwrap();
    let mask = Tensor::from_vec((0..n).map(|i| (i % 5 != 0) as u8 as f64).collect::<Vec<_>>(), n, &DEV).unwrap();
    let sparse = ops::teacher_top_k(&teacher_hidden, &teacher_w, k, 2.0).unwrap();
    for divergence in DIVERGENCES {
        let spec = ops::KdSpec { divergence, temperature: 2.0, kd_ratio: 0.3 };
        let trainable = FrozenWeight::Dense(w.as_tensor().clone());
        let rows = ops::lm_head_kd_sparse(hidden.as_tensor(), &trainable, &sparse, &targets, &mask, &spec).unwrap();
        let zs = hidden.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        // The teacher the dense divergences see at this student (its tail follows the student's).
        let rebuilt = (sparse.log_probs_given(&zs, 2.0).unwrap() * 2.0).unwrap();
        let kd = ((ops::divergence(&zs, &rebuilt, divergence, 2.0).unwrap() * 4.0).unwrap() * &mask).unwrap();
        assert!(common::max_abs_diff(&rows.kd, &kd) < 1e-12, "{divergence:?}");
        check_grads(&[&hidden, &w], || {
            ops::lm_head_kd_sparse(hidden.as_tensor(), &trainable, &sparse, &targets, &mask, &spec).unwrap().loss
        });
        let frozen = FrozenWeight::Dense(w.as_tensor().detach());
        check_grads(&[&hidden], || {
            ops::lm_head_kd_sparse(hidden.as_tensor(), &frozen, &sparse, &targets, &mask, &spec).unwrap().loss
        });
    }
}

/// In bf16 the attention node's gradients are as close to the f64 ones as those of candle's
/// composed graph (softmax with autograd, then the value product), and in f32 within f32
/// rounding: recomputing the probabilities in backward costs no precision.
#[test]
fn attention_gradients_keep_their_precision_in_bf16_and_f32() {
    let (q64, k64, v64) = (tensor(&[1, 3, 48, 64], 1), tensor(&[1, 3, 16, 64], 2), tensor(&[1, 3, 16, 64], 3));
    let spec = ops::CausalMask { rep: 3, t: 16, offset: 0, window: None };
    let probe = tensor(&[1, 3, 48, 64], 4);
    let grads = |dtype: DType, fused: bool| -> Vec<Vec<f64>> {
        let var = |t: &Tensor| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap();
        let (q, k, v) = (var(&q64), var(&k64), var(&v64));
        let out = if fused {
            ops::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.125, Some(&spec), true).unwrap()
        } else {
            let s = (q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap() * 0.125).unwrap();
            let s = s.broadcast_add(&spec.tensor(dtype, &DEV).unwrap().unwrap()).unwrap();
            candle_nn::ops::softmax(&s, D::Minus1).unwrap().matmul(v.as_tensor()).unwrap()
        };
        let g = (out * probe.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        [&q, &k, &v]
            .iter()
            .map(|x| {
                g.get(x.as_tensor()).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
            })
            .collect()
    };
    let want = grads(DType::F64, false);
    let rel = |got: &[f64], want: &[f64]| {
        let err: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        err / want.iter().map(|b| b * b).sum::<f64>().sqrt()
    };
    let (fused, composed, f32s) = (grads(DType::BF16, true), grads(DType::BF16, false), grads(DType::F32, true));
    for i in 0..3 {
        let (f, c) = (rel(&fused[i], &want[i]), rel(&composed[i], &want[i]));
        assert!(f <= 1.1 * c, "input {i}: bf16 node {f} vs composed {c}");
        assert!(rel(&f32s[i], &want[i]) < 1e-6, "input {i}: f32");
    }
}
