//! `graft classify` end to end on PNG files of real digits (MNIST-5k): the printed top classes
//! and probabilities are the library's EfficientNet-Lite0 softmax of the same preprocessed
//! images, the labels are ImageNet's, and a file that is not an image is named in the error.

mod common;

use candle_core::{DType, Device};
use graft::models::efficientnet::EfficientNetLite;
use graft::vision::preprocess::Preprocess;

#[test]
fn top_classes_are_the_models_softmax_with_imagenet_labels() {
    let dir = tempfile::tempdir().unwrap();
    let digits = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let mut paths = Vec::new();
    for (i, img) in [&digits.images[0], &digits.images[4999]].into_iter().enumerate() {
        let path = dir.path().join(format!("digit{i}.png"));
        image::GrayImage::from_raw(img.width as u32, img.height as u32, img.pixels.clone())
            .unwrap()
            .save(&path)
            .unwrap();
        paths.push(path);
    }
    let args: Vec<&str> =
        ["classify", "--top", "3", "--json"].into_iter().chain(paths.iter().map(|p| p.to_str().unwrap())).collect();
    let run = common::graft(&args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(out["classes"], 1000);
    let rows = out["images"].as_array().unwrap();
    assert_eq!(rows.len(), 2);

    // The same images through the library: 256 x 256, centre crop 224, ImageNet normalisation.
    let model =
        EfficientNetLite::load(&graft::assets::ensure("efficientnet-lite0", false).unwrap(), &Device::Cpu, DType::F32)
            .unwrap();
    let read: Vec<_> = paths.iter().map(|p| graft::vision::files::read_image(p).unwrap()).collect();
    let x = Preprocess::imagenet(224).batch(&read.iter().collect::<Vec<_>>(), None, &Device::Cpu).unwrap();
    let logits: Vec<Vec<f32>> = model.forward(&x, false).unwrap().to_vec2().unwrap();
    let names = graft::datasets::imagenet_classes::load(false).unwrap();
    for (row, l) in rows.iter().zip(&logits) {
        let top = row["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let max = l[order[0]] as f64;
        let z: f64 = l.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (t, &c) in top.iter().zip(&order) {
            assert_eq!(t["class"].as_u64().unwrap() as usize, c);
            assert_eq!(t["label"].as_str().unwrap(), names[c]);
            let p = ((l[c] as f64 - max).exp()) / z;
            assert!((t["probability"].as_f64().unwrap() - p).abs() < 1e-6, "{t} vs {p}");
        }
    }
    assert_ne!(rows[0]["top"], rows[1]["top"], "different digits, different answers");

    // Human output: each file, then its ranked labels.
    let run = common::graft(&["classify", "--top", "2", paths[0].to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.starts_with(&format!("{}\n  1. ", paths[0].display())) && text.contains("\n  2. "), "{text}");
}

#[test]
fn a_file_that_is_not_an_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.png");
    std::fs::write(&bad, b"plain text, not a PNG").unwrap();
    let run = common::graft(&["classify", bad.to_str().unwrap()]).output().unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("reading image") && err.contains("notes.png"), "{err}");
}

#[test]
fn help_has_an_example() {
    let run = common::graft(&["classify", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && help.contains("Example: graft classify"), "{help}");
}
