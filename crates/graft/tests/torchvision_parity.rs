//! ResNet-18 / 50 and VGG-11 / 16 against torchvision itself (`scripts/torchvision-golden.py`,
//! reference values in `tests/golden/torchvision/backbones.json`). No pretrained weights are
//! involved: the script and this test make the same weights and input from a portable rule (one
//! IEEE float64 operation at a time, documented in the script), the test under the tensor names
//! and shapes of torchvision's state dicts as the fixture lists them. Also: loading from a
//! safetensors file, errors naming a missing / unknown / wrongly shaped tensor, and batch
//! statistics in training mode.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::models::resnet::{ResNet, ResNetArch};
use graft::models::vgg::{Vgg, VggArch};
use serde_json::Value;

/// f64 runs: graft and torchvision compute the same float64 function and differ only by
/// summation order (measured below 1e-12 relative); 1e-9 (relative to values above 1) is far
/// above that and far below any real difference (a wrong padding, epsilon or pooling window
/// moves these outputs by 1e-2 and more).
const F64_TOL: f64 = 1e-9;

/// f32 runs against the float64 reference: within 20 times the distance of torchvision's own
/// float32 run from float64 (recorded in the fixture) plus 1e-5, since graft sums in another
/// order. The fixture's noise is 3e-7 (VGG) to 4e-5 (ResNet-50, evaluation).
const F32_NOISE_FACTOR: f64 = 20.0;

/// f32 training-mode runs are compared only where torchvision's own float32 run is this close
/// to float64: ResNet-50's last stage normalises each channel over 8 values (2 images of 2x2),
/// which amplifies float32 rounding to 2.4e-2 in torchvision itself, too loose a check to mean
/// much; its float64 run checks the function.
const F32_TRAIN_MAX_NOISE: f64 = 1e-3;

fn fixture_model(name: &str) -> Value {
    let fx = common::golden_json("torchvision/backbones.json");
    fx["models"].as_array().unwrap().iter().find(|m| m["name"] == name).cloned().expect(name)
}

/// Value `i` of tensor `k` (`name`, `shape`) by the fixture's weight rule.
fn rule_value(k: u64, name: &str, shape: &[usize], i: u64) -> f64 {
    let u = ((i * 7919 + k * 104729) % 2003) as f64 / 2003.0 - 0.5;
    if shape.len() >= 2 {
        u * (24.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
    } else if name.ends_with(".running_var") {
        u + 1.0
    } else if name.ends_with(".running_mean") {
        u * 0.25
    } else if name.ends_with(".weight") {
        u * 0.5 + 1.0
    } else {
        assert!(name.ends_with(".bias"), "no rule for {name}");
        u * 0.25
    }
}

/// The model's tensors by the rule, in f64, under torchvision's names, with the
/// `num_batches_tracked` counters torchvision also saves; checks values the fixture recorded.
fn rule_tensors(model: &Value) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    let mut sum = 0f64;
    let mut values = std::collections::HashMap::new();
    for (k, entry) in model["tensors"].as_array().unwrap().iter().enumerate() {
        let (name, dims) = entry.as_str().unwrap().split_once(' ').unwrap();
        let shape: Vec<usize> = dims.split('x').map(|d| d.parse().unwrap()).collect();
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n as u64).map(|i| rule_value(k as u64, name, &shape, i)).collect();
        sum += v.iter().sum::<f64>();
        for c in model["weight_values_at"].as_array().unwrap().iter().filter(|c| c[0] == name) {
            values.insert(name.to_string(), (v[c[1].as_u64().unwrap() as usize], c[2].as_f64().unwrap()));
        }
        if let Some(bn) = name.strip_suffix(".running_mean") {
            out.push((format!("{bn}.num_batches_tracked"), Tensor::new(0i64, &Device::Cpu).unwrap()));
        }
        out.push((name.to_string(), Tensor::from_vec(v, shape, &Device::Cpu).unwrap()));
    }
    assert!(!values.is_empty());
    for (name, (got, want)) in values {
        // serde_json may parse a float one ulp away from the shortest representation written.
        assert!((got - want).abs() <= 2.0 * f64::EPSILON * want.abs(), "{name}: rule gives {got}, fixture {want}");
    }
    let want = model["weight_sum"].as_f64().unwrap();
    assert!((sum - want).abs() <= 1e-9 * want.abs().max(1.0), "weight sum {sum}, fixture {want}");
    out
}

/// The fixture's input batch `[2, 3, 64, 64]` in `dtype`.
fn input(dtype: DType) -> Tensor {
    let fx = common::golden_json("torchvision/backbones.json");
    let shape: Vec<usize> =
        fx["input"]["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let n = shape.iter().product::<usize>() as u64;
    let v: Vec<f64> = (0..n).map(|j| (((j * 7907 + 17) % 1009) as f64 / 1009.0 - 0.5) * 4.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Largest difference of graft's logits and features from the fixture's run `key`, each
/// difference divided by max(1, |reference|); fails above `tol`.
fn compare(model: &Value, key: &str, logits: &Tensor, features: &Tensor, tol: f64) -> f64 {
    let logits: Vec<Vec<f64>> = logits.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let features: Vec<Vec<f64>> = features.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let nums = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let stride = model["features_stride"].as_u64().unwrap() as usize;
    let mut worst = 0f64;
    for (n, want) in model[key].as_array().unwrap().iter().enumerate() {
        let at = format!("{} {key} image {n}", model["name"]);
        let (got_l, got_f) = (&logits[n], &features[n]);
        assert_eq!(got_f.len() as u64, want["features_len"].as_u64().unwrap(), "{at}: feature width");
        let mut pairs: Vec<(f64, f64, &str)> = Vec::new();
        let want_l = nums(&want["logits"]);
        assert_eq!(got_l.len(), want_l.len(), "{at}: classes");
        pairs.extend(got_l.iter().zip(&want_l).map(|(&g, &w)| (g, w, "logit")));
        let sampled: Vec<f64> = got_f.iter().step_by(stride).copied().collect();
        pairs.extend(sampled.iter().zip(nums(&want["features_sampled"])).map(|(&g, w)| (g, w, "feature")));
        // Sums over every feature: each term within `tol`.
        let width = got_f.len() as f64;
        let sum: f64 = got_f.iter().sum();
        pairs.push((sum / width, want["features_sum"].as_f64().unwrap() / width, "feature mean"));
        let sum_sq: f64 = got_f.iter().map(|v| v * v).sum();
        pairs.push((sum_sq.sqrt(), want["features_sum_sq"].as_f64().unwrap().sqrt(), "feature norm"));
        for (g, w, what) in pairs {
            let d = (g - w).abs() / w.abs().max(1.0);
            assert!(d <= tol, "{at}: {what} {g} vs torchvision {w} (relative difference {d:e}, tolerance {tol:e})");
            worst = worst.max(d);
        }
    }
    worst
}

/// Builds the model named in the fixture with the rule's weights in `dtype`; returns its
/// features and logits in evaluation and (if `train`) training mode.
type Run = Box<dyn Fn(&Tensor, bool) -> (Tensor, Tensor)>;

fn build(model: &Value, dtype: DType) -> Run {
    let tensors = rule_tensors(model);
    let dev = Device::Cpu;
    match model["name"].as_str().unwrap() {
        name @ ("resnet18" | "resnet50") => {
            let arch = if name == "resnet18" { ResNetArch::ResNet18 } else { ResNetArch::ResNet50 };
            let m = ResNet::from_tensors(arch, tensors, &dev, dtype).unwrap();
            assert_eq!(m.num_classes(), 10);
            Box::new(move |x, train| {
                let f = m.features(x, train).unwrap();
                let l = m.classify(&f).unwrap();
                assert_eq!(m.forward(x, train).unwrap().to_vec2::<f64>().ok(), l.to_vec2::<f64>().ok());
                (f, l)
            })
        }
        name => {
            let arch = if name == "vgg11" { VggArch::Vgg11 } else { VggArch::Vgg16 };
            let m = Vgg::from_tensors(arch, tensors, &dev, dtype).unwrap();
            assert_eq!(m.num_classes(), 10);
            Box::new(move |x, train| {
                let f = m.features(x, train).unwrap();
                (f.clone(), m.classify(&f).unwrap())
            })
        }
    }
}

/// Parity of `name` in f64 (evaluation, and training for ResNets) and f32.
fn parity(name: &str) {
    let model = fixture_model(name);
    let modes: Vec<&str> = ["eval", "train"].into_iter().filter(|m| model[format!("{m}_f64")].is_array()).collect();
    for dtype in [DType::F64, DType::F32] {
        let run = build(&model, dtype);
        let x = input(dtype);
        for mode in &modes {
            let noise = model["max_abs_logit_diff_f32_vs_f64"][mode].as_f64().unwrap();
            let tol = match dtype {
                DType::F64 => F64_TOL,
                _ if *mode == "train" && noise > F32_TRAIN_MAX_NOISE => continue,
                _ => F32_NOISE_FACTOR * noise + 1e-5,
            };
            let (features, logits) = run(&x, *mode == "train");
            let d = compare(&model, &format!("{mode}_f64"), &logits, &features, tol);
            eprintln!("{name} {dtype:?} {mode}: largest relative difference from torchvision float64 {d:e}");
        }
    }
}

#[test]
fn resnet18_matches_torchvision() {
    parity("resnet18");
}

#[test]
fn resnet50_matches_torchvision() {
    parity("resnet50");
}

#[test]
fn vgg11_matches_torchvision() {
    parity("vgg11");
}

#[test]
fn vgg16_matches_torchvision() {
    parity("vgg16");
}

fn resnet18_err(tensors: Vec<(String, Tensor)>) -> String {
    ResNet::from_tensors(ResNetArch::ResNet18, tensors, &Device::Cpu, DType::F32).unwrap_err().to_string()
}

#[test]
fn missing_unknown_and_misshaped_tensors_are_named() {
    let good = rule_tensors(&fixture_model("resnet18"));
    let without = |name: &str| good.iter().filter(|(n, _)| n != name).cloned().collect::<Vec<_>>();

    let err = resnet18_err(without("layer3.1.bn2.running_var"));
    assert!(err.contains("`layer3.1.bn2.running_var` is missing"), "{err}");

    let mut extra = good.clone();
    extra.push(("layer5.0.conv1.weight".into(), Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap()));
    let err = resnet18_err(extra);
    assert!(err.contains("not part of ResNet-18") && err.contains("layer5.0.conv1.weight"), "{err}");

    let mut bad = without("layer2.0.downsample.0.weight");
    bad.push((
        "layer2.0.downsample.0.weight".into(),
        Tensor::zeros((128, 64, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    ));
    let err = resnet18_err(bad);
    assert!(
        err.contains("`layer2.0.downsample.0.weight` has shape [128, 64, 3, 3], expected [128, 64, 1, 1]"),
        "{err}"
    );

    // ResNet-18 weights are not ResNet-50's: the first bottleneck convolution is 1x1.
    let err = ResNet::from_tensors(ResNetArch::ResNet50, good, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("`layer1.0.conv1.weight` has shape [64, 64, 3, 3], expected [64, 64, 1, 1]"), "{err}");

    // VGG: a classifier that does not take 512 x 7 x 7 features.
    let mut vgg: Vec<(String, Tensor)> = VggArch::Vgg11
        .layers()
        .iter()
        .scan((0usize, 3usize), |(index, channels), &out| {
            let at = *index;
            if out == 0 {
                *index += 1;
                return Some(vec![]);
            }
            let t = vec![
                (
                    format!("features.{at}.weight"),
                    Tensor::zeros((out, *channels, 3, 3), DType::F32, &Device::Cpu).unwrap(),
                ),
                (format!("features.{at}.bias"), Tensor::zeros(out, DType::F32, &Device::Cpu).unwrap()),
            ];
            (*index, *channels) = (at + 2, out);
            Some(t)
        })
        .flatten()
        .collect();
    vgg.push(("classifier.0.weight".into(), Tensor::zeros((16, 512), DType::F32, &Device::Cpu).unwrap()));
    let err = Vgg::from_tensors(VggArch::Vgg11, vgg, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("`classifier.0.weight` has shape [16, 512], expected [0, 25088]"), "{err}");
}

#[test]
fn loads_from_safetensors_and_names_the_file_in_errors() {
    let tensors: Vec<(String, Tensor)> = rule_tensors(&fixture_model("resnet18"))
        .into_iter()
        .map(|(n, t)| if t.dtype() == DType::F64 { (n, t.to_dtype(DType::F32).unwrap()) } else { (n, t) })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    graft::io::safetensors::save_atomic(tensors.clone(), &path).unwrap();
    let loaded = ResNet::load(ResNetArch::ResNet18, &path, &Device::Cpu, DType::F32).unwrap();
    let built = ResNet::from_tensors(ResNetArch::ResNet18, tensors, &Device::Cpu, DType::F32).unwrap();
    let x = input(DType::F32);
    let (a, b) = (loaded.forward(&x, false).unwrap(), built.forward(&x, false).unwrap());
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());

    let err = Vgg::load(VggArch::Vgg11, &path, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("resnet18.safetensors") && err.contains("`features.0.weight` is missing"), "{err}");
}

#[test]
fn resnet_training_mode_uses_batch_statistics() {
    let model = fixture_model("resnet18");
    let tensors = rule_tensors(&model);
    // The same weights with other running statistics.
    let shifted: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| match n {
            n if n.ends_with(".running_mean") => (n.clone(), (t + 0.5).unwrap()),
            n if n.ends_with(".running_var") => (n.clone(), (t * 3.0).unwrap()),
            _ => (n.clone(), t.clone()),
        })
        .collect();
    let dev = Device::Cpu;
    let a = ResNet::from_tensors(ResNetArch::ResNet18, tensors, &dev, DType::F64).unwrap();
    let b = ResNet::from_tensors(ResNetArch::ResNet18, shifted, &dev, DType::F64).unwrap();
    let x = input(DType::F64);
    let logits = |m: &ResNet, train| m.forward(&x, train).unwrap();
    // Training mode ignores the running statistics...
    assert_eq!(logits(&a, true).to_vec2::<f64>().unwrap(), logits(&b, true).to_vec2::<f64>().unwrap());
    // ...evaluation uses them...
    assert!(common::max_abs_diff(&logits(&a, false), &logits(&b, false)) > 1e-2);
    // ...and training mode normalises over the batch: an image's logits depend on its batch mates.
    let alone = a.forward(&x.narrow(0, 0, 1).unwrap(), true).unwrap();
    assert!(common::max_abs_diff(&alone, &logits(&a, true).narrow(0, 0, 1).unwrap()) > 1e-2);
}
