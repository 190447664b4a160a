//! EfficientNet-Lite0 built from the real `efficientnet-lite0` checkpoint: every tensor is used,
//! a forward pass on real images (MNIST digits) gives finite logits over the 1,000 ImageNet classes,
//! and the backward through every layer agrees with finite differences. Agreement with a
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
