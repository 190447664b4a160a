//! `graft vision detect` and `graft vision segment` end to end on scenes composed from real
//! digits (MNIST-5k) with the real EfficientNet-Lite0: the loss falls, the scores are written
//! and in range, a resumed finished run scores the same, a from-scratch run writes its backbone
//! with learned running statistics, and bad configs are refused naming the key.

mod common;

use std::path::Path;

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("scenes.toml");
    std::fs::write(
        &path,
        "[scenes]\ndataset = \"mnist-5k\"\ncanvas = 64\nmax_items = 3\ntrain = 48\ntest = 16\n\n\
         [train]\nbackbone = \"frozen\"\nepochs = 3\nbatch_size = 8\n\n[output]\ndir = \"run\"\n",
    )
    .unwrap();
    path
}

/// Runs graft in `dir` and parses its JSON.
fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let run = common::graft(args).current_dir(dir).output().unwrap();
    assert!(run.status.success(), "graft {args:?}: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

fn losses(s: &serde_json::Value) -> Vec<f64> {
    s["epoch_losses"].as_array().unwrap().iter().map(|p| p["loss"].as_f64().unwrap()).collect()
}

#[test]
fn a_detector_trains_scores_map_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let s = json(dir.path(), &["vision", "detect", cfg, "--json"]);
    assert_eq!(
        (s["task"].as_str(), s["train_scenes"].as_u64(), s["test_scenes"].as_u64()),
        (Some("detection"), Some(48), Some(16))
    );
    assert_eq!(s["backbone_trained"], false);
    let l = losses(&s);
    assert!(l[2] < l[0], "{l:?}");
    let d = &s["detection"];
    let map = d["map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{d}");
    assert_eq!(
        d["per_class_boxes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        s["test_objects"].as_u64().unwrap()
    );
    assert!(s["segmentation"].is_null());
    for f in ["summary.json", "head.safetensors", "metrics.jsonl"] {
        assert!(dir.path().join("run").join(f).is_file(), "{f}");
    }
    let again = json(dir.path(), &["vision", "detect", cfg, "--resume", "--json"]);
    assert_eq!(again["detection"], s["detection"]);
    assert_eq!(again["epoch_losses"], s["epoch_losses"]);
}

#[test]
fn a_from_scratch_segmenter_trains_every_layer_and_scores_iou() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let s = json(dir.path(), &["vision", "segment", cfg, "--set", "model.init=\"random\"", "--json"]);
    assert_eq!(
        (s["task"].as_str(), s["init"].as_str(), s["backbone_trained"].as_bool()),
        (Some("segmentation"), Some("random"), Some(true))
    );
    let l = losses(&s);
    assert!(l[2] < l[0], "{l:?}");
    let m = &s["segmentation"];
    assert_eq!(m["per_label_iou"].as_array().unwrap().len(), 11);
    for key in ["miou", "miou_objects", "pixel_accuracy"] {
        assert!((0.0..=1.0).contains(&m[key].as_f64().unwrap()), "{key}: {m}");
    }
    let tensors =
        candle_core::safetensors::load(dir.path().join("run/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let var: Vec<f32> = tensors["_blocks.0._bn1.running_var"].to_vec1().unwrap();
    assert!(var.iter().any(|&v| (v - 1.0).abs() > 1e-3), "running variances never moved");
}

#[test]
fn bad_scene_configs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    for (set, says) in [
        ("scenes.canvas=40", "scenes.canvas = 40"),
        ("scenes.min_items=5", "scenes.min_items = 5"),
        ("scenes.dataset=\"cifar\"", "scenes.dataset = \"cifar\""),
        ("train.backbone=\"lora\"", "lora"),
        ("scenes.colour=1", "colour"),
    ] {
        let run = common::graft(&["vision", "detect", cfg, "--set", set]).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(says), "{set}: {err}");
    }
    let help = common::graft(&["vision", "segment", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("graft vision segment scenes.toml"));
}
