//! EfficientNet-Lite0 built from the real `efficientnet-lite0` checkpoint: every tensor is used,
//! a forward pass on real images (MNIST digits) gives finite logits over the 1,000 ImageNet classes,
//! and the backward through every layer agrees with finite differences; LoRA on the 1x1
//! convolutions starts as the plain model, has the gradients finite differences say, and merges
//! into a plain checkpoint. Agreement with a
//! PyTorch implementation is checked in tests/efficientnet_parity.rs.

use candle_core::{DType, Device, Tensor};
use graft::models::efficientnet::EfficientNetLite;
use graft::vision::preprocess::Preprocess;

#[test]
fn lite0_loads_every_tensor_and_classifies_real_images() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let model = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.num_classes(), 1000);

    let digits = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let images = [&digits.images[0], &digits.images[4999]];
    let x =
        Preprocess { resize: 128, crop: 128, ..Preprocess::imagenet(128) }.batch(&images, None, &Device::Cpu).unwrap();
    let logits = model.forward(&x, false).unwrap();
    assert_eq!(logits.dims(), [2, 1000]);
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
    assert_ne!(rows[0], rows[1], "different images, different logits");
    let spread = |r: &[f32]| r.iter().cloned().fold(f32::MIN, f32::max) - r.iter().cloned().fold(f32::MAX, f32::min);
    assert!(rows.iter().all(|r| spread(r) > 1.0), "logits are not flat");

    // Training mode normalises with the batch's statistics: another function of the input.
    let train: Vec<Vec<f32>> = model.forward(&x, true).unwrap().to_vec2().unwrap();
    assert!(train.iter().flatten().all(|v| v.is_finite()) && train != rows);
}

#[test]
fn missing_and_unknown_tensors_are_named() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let tensors = graft::io::torch::read_tensors(&path, &Device::Cpu).unwrap();
    let without: Vec<_> = tensors.iter().filter(|(n, _)| n != "_blocks.7._bn1.running_var").cloned().collect();
    let e = EfficientNetLite::from_tensors(without, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("`_blocks.7._bn1.running_var` is missing"), "{e}");
    let mut extra = tensors.clone();
    extra.push(("_blocks.3._se_reduce.weight".into(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()));
    let e = EfficientNetLite::from_tensors(extra, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("1 tensors are not part of EfficientNet-Lite0: _blocks.3._se_reduce.weight"), "{e}");
    let mut wrong = tensors;
    wrong[0].1 = Tensor::zeros((32, 3, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let e = EfficientNetLite::from_tensors(wrong, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("`_conv_stem.weight` has shape [32, 3, 5, 5], expected [32, 3, 3, 3]"), "{e}");
}

#[test]
fn gradients_reach_the_image_through_every_layer_as_finite_differences_say() {
    // f64 so central differences are exact to ~1e-8; training mode (batch statistics) so the
    // batch norms' backward is on the path too.
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let model = EfficientNetLite::load(&path, &Device::Cpu, DType::F64).unwrap();
    let digits = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let images = [&digits.images[1], &digits.images[2]];
    let x = Preprocess { resize: 48, crop: 48, ..Preprocess::imagenet(48) }
        .batch(&images, None, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let x = candle_core::Var::from_tensor(&x).unwrap();
    let probe = Tensor::arange(0f64, 1000., &Device::Cpu).unwrap().affine(1e-3, -0.5).unwrap();
    let objective = |x: &Tensor| model.forward(x, true).unwrap().broadcast_mul(&probe).unwrap().sum_all().unwrap();
    let grads = objective(x.as_tensor()).backward().unwrap();
    let analytic: Vec<f64> =
        grads.get(x.as_tensor()).expect("the image has a gradient").flatten_all().unwrap().to_vec1().unwrap();
    assert!(analytic.iter().all(|g| g.is_finite()) && analytic.iter().any(|g| *g != 0.0));
    let base: Vec<f64> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    // The network is piecewise smooth (ReLU6 clips thousands of units), so a difference step can
    // straddle a kink; the best of three steps is compared (a wrong backward is off at every one).
    for i in [0, 777, 3 * 48 * 48 + 1200, base.len() - 1] {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            objective(&Tensor::from_vec(v, x.as_tensor().dims(), &Device::Cpu).unwrap()).to_scalar::<f64>().unwrap()
        };
        let err = [1e-5, 1e-6, 1e-7]
            .map(|h| {
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                (numeric - analytic[i]).abs() / (1e-3 + numeric.abs())
            })
            .into_iter()
            .fold(f64::MAX, f64::min);
        assert!(err < 1e-5, "pixel {i}: backward {} is {err:e} (relative) from finite differences", analytic[i]);
    }
}

/// Deterministic values in [-amp, amp] shaped like `like`, offset by `phase`.
fn wave(like: &Tensor, amp: f64, phase: f64) -> Tensor {
    let n = like.elem_count();
    Tensor::arange(0u32, n as u32, like.device())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .affine(0.37, phase)
        .unwrap()
        .sin()
        .unwrap()
        .affine(amp, 0.0)
        .unwrap()
        .reshape(like.shape())
        .unwrap()
        .to_dtype(like.dtype())
        .unwrap()
}

fn digits_at(side: usize, dtype: DType) -> Tensor {
    let digits = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let images = [&digits.images[3], &digits.images[4]];
    Preprocess { resize: side, crop: side, ..Preprocess::imagenet(side) }
        .batch(&images, None, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

#[test]
fn lora_on_the_1x1_convolutions_starts_exact_and_merges_into_a_plain_checkpoint() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let base = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    let x = digits_at(32, DType::F32);
    let logits =
        |m: &EfficientNetLite| -> Vec<f32> { m.forward(&x, false).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
    let plain = logits(&base);

    let mut m = base.clone();
    let vars = m.add_lora(4, 8.0, 7).unwrap();
    // 15 expansions (block 0 has none), 16 projections and the head: 32 adapters, A and B each.
    assert_eq!(vars.len(), 64);
    assert_eq!(vars[0].0, "_blocks.0._project_conv.lora_A");
    assert_eq!(vars[63].0, "_conv_head.lora_B");
    let named: std::collections::HashMap<&str, &candle_core::Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert_eq!(named["_blocks.3._expand_conv.lora_A"].dims(), [4, 24]);
    assert_eq!(named["_blocks.3._project_conv.lora_A"].dims(), [4, 144]);
    assert_eq!(named["_blocks.3._project_conv.lora_B"].dims(), [40, 4]);
    assert_eq!(named["_conv_head.lora_B"].dims(), [1280, 4]);
    assert_eq!(
        m.lora_vars().iter().map(|(n, _)| n).collect::<Vec<_>>(),
        vars.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // B = 0: bit for bit the model without adapters.
    let same: Vec<u32> = logits(&m).iter().map(|v| v.to_bits()).collect();
    assert_eq!(same, plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    // A is seeded: the same seed draws the same factors, another seed others.
    let a =
        |m: &mut EfficientNetLite, seed| m.add_lora(4, 8.0, seed).unwrap()[0].1.as_tensor().to_vec2::<f32>().unwrap();
    assert_eq!(a(&mut base.clone(), 7), vars[0].1.as_tensor().to_vec2::<f32>().unwrap());
    assert_ne!(a(&mut base.clone(), 8), vars[0].1.as_tensor().to_vec2::<f32>().unwrap());
    assert!(m.add_lora(4, 8.0, 7).unwrap_err().to_string().contains("already has LoRA"));

    // Trained-looking B: the output moves; merged (W + s·B·A) it is the same function.
    for (i, (_, v)) in vars.iter().enumerate().filter(|(_, (n, _))| n.ends_with("lora_B")) {
        v.set(&wave(v.as_tensor(), 0.02, i as f64)).unwrap();
    }
    let adapted = logits(&m);
    assert_ne!(adapted, plain);
    let mut merged = m.clone();
    merged.merge_lora().unwrap();
    assert!(merged.lora_vars().is_empty() && !m.lora_vars().is_empty());
    let merged_logits = logits(&merged);
    let gap = adapted.iter().zip(&merged_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(gap < 1e-3, "merged logits differ by {gap}");

    // `save` writes the merged weights under the checkpoint's names only: it loads as a plain
    // Lite0 (unknown tensors would be refused) and computes what the adapted model does.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("lora-merged.safetensors");
    m.save(&file).unwrap();
    let reloaded = EfficientNetLite::load(&file, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(logits(&reloaded), merged_logits);
}

#[test]
fn lora_gradients_through_the_1x1_convolutions_match_finite_differences() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let mut model = EfficientNetLite::load(&path, &Device::Cpu, DType::F64).unwrap();
    let vars = model.add_lora(2, 4.0, 3).unwrap();
    assert!(vars.iter().all(|(_, v)| v.dtype() == DType::F64));
    // B non-zero, or A's gradient would be zero.
    for (i, (_, v)) in vars.iter().enumerate().filter(|(_, (n, _))| n.ends_with("lora_B")) {
        v.set(&wave(v.as_tensor(), 0.05, i as f64)).unwrap();
    }
    let x = digits_at(32, DType::F64);
    let probe = Tensor::arange(0f64, 1000., &Device::Cpu).unwrap().affine(1e-3, -0.5).unwrap();
    let objective = || model.forward(&x, false).unwrap().broadcast_mul(&probe).unwrap().sum_all().unwrap();
    let grads = objective().backward().unwrap();
    let named: std::collections::HashMap<&str, &candle_core::Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    for name in [
        "_blocks.3._expand_conv.lora_A",
        "_blocks.3._project_conv.lora_B",
        "_blocks.10._project_conv.lora_A",
        "_conv_head.lora_A",
        "_conv_head.lora_B",
    ] {
        let var = named[name];
        let analytic: Vec<f64> = grads.get(var.as_tensor()).expect(name).flatten_all().unwrap().to_vec1().unwrap();
        assert!(analytic.iter().any(|g| *g != 0.0), "{name}: zero gradient");
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for i in [0, base.len() / 3, base.len() - 1] {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()).unwrap();
                objective().to_scalar::<f64>().unwrap()
            };
            // Best of three steps: a step can straddle a ReLU6 kink; a wrong backward is off at all.
            let err = [1e-4, 1e-5, 1e-6]
                .map(|h| {
                    let numeric = (at(h) - at(-h)) / (2.0 * h);
                    (numeric - analytic[i]).abs() / (1e-3 + numeric.abs())
                })
                .into_iter()
                .fold(f64::MAX, f64::min);
            var.set(&Tensor::from_vec(base.clone(), var.dims(), &Device::Cpu).unwrap()).unwrap();
            assert!(err < 1e-5, "{name}[{i}]: backward {} is {err:e} (relative) from finite differences", analytic[i]);
        }
    }
}
