//! Image classifiers on the real EfficientNet-Lite0 checkpoint and real digits (MNIST-5k): which
//! weights each number of unfrozen units trains, training that lowers the loss and moves only
//! those weights, a saved model that reloads to the same features, and a killed run that
//! resumes bit-identically; the same for LoRA adapters on the 1x1 convolutions.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::features::{HeadConfig, RunOutput};
use graft::models::efficientnet::{EfficientNetLite, LITE0_UNITS};
use graft::train::{Event, RunDir};
use graft::vision::classifier::{
    fit_image_classifier, fit_image_classifier_with, image_features, Backbone, ImageInput, LabelledImages,
};
use graft::vision::preprocess::Preprocess;
use graft::vision::Image;
use std::path::Path;

fn model() -> EfficientNetLite {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap()
}

/// `per_class` digits of each of the classes 0, 1 and 2, skipping the first `skip` of each.
fn digits(per_class: usize, skip: usize) -> (Vec<Image>, Vec<usize>) {
    let set = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let mut out = (Vec::new(), Vec::new());
    for class in 0..3 {
        let of_class = set.images.iter().zip(&set.labels).filter(|(_, &l)| l == class).skip(skip).take(per_class);
        for (img, &l) in of_class {
            out.0.push(img.clone());
            out.1.push(l);
        }
    }
    out
}

fn input() -> ImageInput {
    ImageInput { preprocess: Preprocess { resize: 32, crop: 32, ..Preprocess::imagenet(32) }, augment: None, batch: 16 }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn unfreezing_counts_units_from_the_top_and_covers_every_weight_at_nine() {
    let mut m = model();
    let head = m.unfreeze_top(1).unwrap();
    let names: Vec<&str> = head.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["_conv_head.weight", "_bn1.weight", "_bn1.bias"]);
    assert_eq!(head.iter().map(|(_, v)| v.elem_count()).sum::<usize>(), 1280 * 320 + 2 * 1280);

    // Two units: the head and the seventh stage (block 15: expansion, depthwise, projection).
    let two = model().unfreeze_top(2).unwrap();
    assert_eq!(two.len(), 3 + 9);
    assert!(
        two.iter().skip(3).all(|(n, _)| n.starts_with("_blocks.15.")),
        "{:?}",
        two.iter().map(|v| &v.0).collect::<Vec<_>>()
    );

    // All nine: every weight but the running statistics and the ImageNet classifier, which
    // together with them make up the checkpoint's 4,694,024 parameters.
    let mut all = model();
    let vars = all.unfreeze_top(LITE0_UNITS).unwrap();
    let trained: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let fixed: usize = all
        .named_tensors()
        .iter()
        .filter(|(n, _)| n.contains("running_") || n.starts_with("_fc."))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(trained + fixed, 4_694_024);
    assert!(vars.iter().any(|(n, _)| n == "_conv_stem.weight"));

    let e = model().unfreeze_top(10).unwrap_err().to_string();
    assert!(e.contains("cannot unfreeze the top 10 units of EfficientNet-Lite0: it has 9"), "{e}");
}

#[test]
fn fine_tuning_the_top_unit_lowers_the_loss_moves_only_it_and_saves_a_loadable_model() {
    let (images, labels) = digits(8, 0);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let base = model();
    let mut m = model();
    let cfg = HeadConfig { epochs: 4, batch_size: 8, lr: 1e-2, ..HeadConfig::default() };
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    let (clf, losses) = fit_image_classifier(&mut m, data, 1, &input(), &cfg, out).unwrap();
    assert_eq!(losses.len(), 4);
    assert!(losses[3].loss < losses[0].loss, "loss did not fall: {losses:?}");
    assert_eq!(clf.trainable_params(), clf.head().trainable_params() + 1280 * 320 + 2 * 1280);

    let before: std::collections::HashMap<String, Tensor> = base.named_tensors().into_iter().collect();
    for (name, t) in m.named_tensors() {
        let moved = bits(&t) != bits(&before[&name]);
        let trains = name.starts_with("_conv_head.") || name == "_bn1.weight" || name == "_bn1.bias";
        assert_eq!(moved, trains, "{name}");
    }
    // Most training digits are classified right after four epochs.
    let predicted = clf.predict(&m, &refs, &input()).unwrap();
    let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert!(right * 3 > labels.len() * 2, "{right} of {} right", labels.len());

    // The fine-tuned backbone saved as safetensors loads back to the same features.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lite0.safetensors");
    m.save(&path).unwrap();
    let reloaded = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    let f = |m: &EfficientNetLite| bits(&image_features(m, &refs[..4], &input()).unwrap());
    assert_eq!(f(&reloaded), f(&m));
    assert_ne!(f(&reloaded), f(&base));
}

#[test]
fn a_killed_image_classifier_run_resumes_bit_identically() {
    let (images, labels) = digits(4, 20);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let augmenting = ImageInput {
        preprocess: Preprocess { resize: 36, crop: 32, random_crop: true, hflip: true, ..Preprocess::imagenet(32) },
        augment: Some(7),
        batch: 16,
    };
    let cfg = HeadConfig { epochs: 2, batch_size: 4, ..HeadConfig::default() };
    let fit = |m: &mut EfficientNetLite, dir: &Path, resume: bool, on_event: &mut dyn FnMut(Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 2).unwrap()), on_event };
        fit_image_classifier(m, data, 2, &augmenting, &cfg, out)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut whole = model();
    let (clf, losses) = fit(&mut whole, &tmp.path().join("whole"), false, &mut |_| {}).unwrap();
    let cut = tmp.path().join("cut");
    common::killed_at(4, |on_event| fit(&mut model(), &cut, false, on_event));
    // A resumed process starts from the weights on disk, not from the dead run's memory.
    let mut resumed = model();
    let (clf_resumed, losses_resumed) = fit(&mut resumed, &cut, true, &mut |_| {}).unwrap();
    assert_eq!(losses_resumed, losses);
    for ((name, a), (_, b)) in whole.named_tensors().iter().zip(&resumed.named_tensors()) {
        assert_eq!(bits(a), bits(b), "{name} after resume");
    }
    let (pa, pb) =
        (clf.predict(&whole, &refs, &augmenting).unwrap(), clf_resumed.predict(&resumed, &refs, &augmenting).unwrap());
    assert_eq!(pa, pb);
    assert_eq!(common::metrics_without_timing(&tmp.path().join("whole")), common::metrics_without_timing(&cut));
}

#[test]
fn lora_training_moves_only_the_adapters_and_saves_them_merged() {
    let (images, labels) = digits(6, 0);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let base = model();
    let mut m = model();
    let cfg = HeadConfig { epochs: 3, batch_size: 6, lr: 1e-2, ..HeadConfig::default() };
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    let lora = Backbone::Lora { r: 2, alpha: 4.0 };
    let (clf, losses) = fit_image_classifier_with(&mut m, data, lora, &input(), &cfg, out).unwrap();
    assert!(losses[2].loss < losses[0].loss, "loss did not fall: {losses:?}");
    assert_eq!((clf.backbone(), clf.unfreeze_top()), (lora, 0));
    let vars = m.lora_vars();
    assert_eq!(vars.len(), 64);
    let lora_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(clf.trainable_params(), clf.head().trainable_params() + lora_params);
    // B left zero: the adapters trained.
    for (name, v) in vars.iter().filter(|(n, _)| n.ends_with("lora_B")) {
        assert!(bits(v.as_tensor()).iter().any(|b| *b != 0), "{name} did not train");
    }
    // The base weights did not move.
    for ((name, a), (_, b)) in base.named_tensors().iter().zip(&m.named_tensors()) {
        assert_eq!(bits(a), bits(b), "{name}");
    }
    // Saved, the adapters are merged: a plain checkpoint that computes the adapted features.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lite0-lora.safetensors");
    m.save(&path).unwrap();
    let reloaded = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    let f = |m: &EfficientNetLite| image_features(m, &refs[..4], &input()).unwrap();
    let gap = (f(&reloaded) - f(&m)).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(gap < 1e-3, "merged features differ by {gap}");
    assert_ne!(bits(&f(&reloaded)), bits(&f(&base)));
}

#[test]
fn a_killed_lora_run_resumes_bit_identically() {
    let (images, labels) = digits(4, 30);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let cfg = HeadConfig { epochs: 2, batch_size: 4, ..HeadConfig::default() };
    let lora = Backbone::Lora { r: 2, alpha: 4.0 };
    let fit = |m: &mut EfficientNetLite, dir: &Path, resume: bool, on_event: &mut dyn FnMut(Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 2).unwrap()), on_event };
        fit_image_classifier_with(m, data, lora, &input(), &cfg, out)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut whole = model();
    let (clf, losses) = fit(&mut whole, &tmp.path().join("whole"), false, &mut |_| {}).unwrap();
    let cut = tmp.path().join("cut");
    common::killed_at(4, |on_event| fit(&mut model(), &cut, false, on_event));
    let mut resumed = model();
    let (clf_resumed, losses_resumed) = fit(&mut resumed, &cut, true, &mut |_| {}).unwrap();
    assert_eq!(losses_resumed, losses);
    assert_eq!(resumed.lora_vars().len(), 64);
    for ((name, a), (_, b)) in whole.lora_vars().iter().zip(&resumed.lora_vars()) {
        assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "{name} after resume");
    }
    assert_eq!(clf.predict(&whole, &refs, &input()).unwrap(), clf_resumed.predict(&resumed, &refs, &input()).unwrap());
    assert_eq!(common::metrics_without_timing(&tmp.path().join("whole")), common::metrics_without_timing(&cut));
}

#[test]
fn random_networks_follow_the_seed_and_have_the_pretrained_architecture() {
    let dev = Device::Cpu;
    let (a, b) = (
        EfficientNetLite::random(3, 1, &dev, DType::F32).unwrap(),
        EfficientNetLite::random(3, 1, &dev, DType::F32).unwrap(),
    );
    let other = EfficientNetLite::random(3, 2, &dev, DType::F32).unwrap();
    let pretrained = model();
    let (ta, tb, to) = (a.named_tensors(), b.named_tensors(), other.named_tensors());
    assert_eq!(ta.len(), pretrained.named_tensors().len());
    for (((name, x), (_, y)), ((_, z), (pname, p))) in
        ta.iter().zip(&tb).zip(to.iter().zip(&pretrained.named_tensors()))
    {
        assert_eq!(name, pname);
        assert_eq!(bits(x), bits(y), "{name}: one seed, one network");
        if name.starts_with("_fc") {
            assert_eq!(x.dim(0).unwrap(), 3);
            continue;
        }
        assert_eq!(x.dims(), p.dims(), "{name}");
        if x.rank() == 4 {
            assert_ne!(bits(x), bits(z), "{name}: another seed, other weights");
            // Kaiming with fan-out: uniform within ±√(6 / fan_out).
            let d = x.dims();
            let bound = (6.0 / (d[0] * d[2] * d[3]) as f32).sqrt();
            let max = x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max <= bound && max > 0.9 * bound, "{name}: max {max}, bound {bound}");
        }
    }
    let value = |name: &str| ta.iter().find(|(n, _)| n == name).unwrap().1.to_vec1::<f32>().unwrap();
    assert!(value("_bn0.running_var").iter().all(|&v| v == 1.0));
    assert!(value("_bn0.running_mean").iter().chain(&value("_bn0.bias")).all(|&v| v == 0.0));
    assert!(EfficientNetLite::random(0, 1, &dev, DType::F32).is_err());
}

#[test]
fn training_from_scratch_learns_running_statistics_and_saves_them() {
    let (images, labels) = digits(8, 0);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let mut m = EfficientNetLite::random(3, 5, &Device::Cpu, DType::F32).unwrap();
    let untrained = m.clone();
    let cfg = HeadConfig { epochs: 4, batch_size: 8, lr: 1e-2, ..HeadConfig::default() };
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    let (clf, losses) = fit_image_classifier_with(&mut m, data, Backbone::Scratch, &input(), &cfg, out).unwrap();
    assert!(losses[3].loss < losses[0].loss, "loss did not fall: {losses:?}");
    assert_eq!(clf.unfreeze_top(), LITE0_UNITS);
    // Every convolution trained, and every batch norm's running statistics left 0 / 1.
    for ((name, a), (_, b)) in untrained.named_tensors().iter().zip(&m.named_tensors()) {
        if name.starts_with("_fc") {
            assert_eq!(bits(a), bits(b), "{name}: the unused classifier stays");
        } else {
            assert_ne!(bits(a), bits(b), "{name} did not move");
        }
    }
    // Evaluation normalises with what training saw: a saved model reloads to the same features.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("scratch.safetensors");
    m.save(&path).unwrap();
    let reloaded = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    let f = |m: &EfficientNetLite| bits(&image_features(m, &refs[..4], &input()).unwrap());
    assert_eq!(f(&reloaded), f(&m));
    assert_eq!(clf.predict(&reloaded, &refs, &input()).unwrap(), clf.predict(&m, &refs, &input()).unwrap());
}

#[test]
fn a_killed_scratch_run_resumes_bit_identically_with_its_running_statistics() {
    let (images, labels) = digits(4, 40);
    let refs: Vec<&Image> = images.iter().collect();
    let data = LabelledImages { images: &refs, labels: &labels, n_classes: 3 };
    let cfg = HeadConfig { epochs: 2, batch_size: 4, ..HeadConfig::default() };
    let fresh = || EfficientNetLite::random(3, 9, &Device::Cpu, DType::F32).unwrap();
    let fit = |m: &mut EfficientNetLite, dir: &Path, resume: bool, on_event: &mut dyn FnMut(Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 2).unwrap()), on_event };
        fit_image_classifier_with(m, data, Backbone::Scratch, &input(), &cfg, out)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut whole = fresh();
    let (clf, losses) = fit(&mut whole, &tmp.path().join("whole"), false, &mut |_| {}).unwrap();
    let cut = tmp.path().join("cut");
    common::killed_at(4, |on_event| fit(&mut fresh(), &cut, false, on_event));
    let mut resumed = fresh();
    let (clf_resumed, losses_resumed) = fit(&mut resumed, &cut, true, &mut |_| {}).unwrap();
    assert_eq!(losses_resumed, losses);
    // Running statistics included: the checkpoint carried them.
    for ((name, a), (_, b)) in whole.named_tensors().iter().zip(&resumed.named_tensors()) {
        assert_eq!(bits(a), bits(b), "{name} after resume");
    }
    assert_eq!(clf.predict(&whole, &refs, &input()).unwrap(), clf_resumed.predict(&resumed, &refs, &input()).unwrap());
    assert_eq!(common::metrics_without_timing(&tmp.path().join("whole")), common::metrics_without_timing(&cut));
}
