//! EfficientNet-Lite0 built from the real `efficientnet-lite0` checkpoint: every tensor is used,
//! and a forward pass on real images (MNIST digits) gives finite logits over the 1,000 ImageNet classes. (No
//! reference implementation runs here, so this checks loading and shapes, not parity.)

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
