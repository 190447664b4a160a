//! `graft vision train` end to end on real digits (MNIST-5k) and the real EfficientNet-Lite0:
//! a fine-tuning run writes its summary, head and backbone, the backbone loads in
//! `graft classify`, a resumed finished run gives the same scores, a LoRA run writes its merged
//! backbone, and bad configs are refused naming the key.

mod common;

use std::path::Path;

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("digits.toml");
    std::fs::write(
        &path,
        format!(
            "[data]\ndataset = \"mnist-5k\"\nlabel_fraction = 0.025\neval_limit = 50\n\n[input]\nresize = 32\ncrop = 32\n\n\
             [train]\nunfreeze_top = 1\n\n[head]\nepochs = 3\nbatch_size = 10\n\n[output]\ndir = \"run\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Runs graft in `dir` (where the config's relative `output.dir` goes) and parses its JSON.
fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let run = common::graft(args).current_dir(dir).output().unwrap();
    assert!(run.status.success(), "graft {args:?}: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn a_fine_tuning_run_scores_saves_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let s = json(dir.path(), &["vision", "train", cfg, "--json"]);
    // 2.5 % of each digit's 400 training images: 10 per class.
    assert_eq!(s["train_examples"], 100);
    assert_eq!(s["test_examples"], 50);
    assert_eq!(s["unfreeze_top"], 1);
    let losses: Vec<f64> = s["epoch_losses"].as_array().unwrap().iter().map(|p| p["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "{losses:?}");
    let acc = s["test"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.3, "ten labelled digits per class should beat chance (0.1) clearly: {acc}");
    assert_eq!(s["test"]["per_class"].as_array().unwrap().len(), 10);
    let run = dir.path().join("run");
    for f in ["summary.json", "head.safetensors", "model.safetensors", "metrics.jsonl"] {
        assert!(run.join(f).is_file(), "{f}");
    }

    // The fine-tuned backbone is a checkpoint `graft classify` reads (its ImageNet classifier kept).
    let digit = digit_png(dir.path(), 7);
    let model = run.join("model.safetensors");
    let c = json(dir.path(), &["classify", "--model", model.to_str().unwrap(), digit.to_str().unwrap(), "--json"]);
    assert_eq!(c["classes"], 1000);

    // Resuming the finished run trains nothing more and scores the same.
    let again = json(dir.path(), &["vision", "train", cfg, "--resume", "--json"]);
    assert_eq!(again["test"], s["test"]);
    assert_eq!(again["epoch_losses"], s["epoch_losses"]);
}

/// Saves MNIST-5k's digit `i` as a PNG in `dir`.
fn digit_png(dir: &Path, i: usize) -> std::path::PathBuf {
    let digit = dir.join(format!("digit{i}.png"));
    let img = &graft::vision::mnist_csv::mnist_5k(false).unwrap().images[i];
    image::GrayImage::from_raw(28, 28, img.pixels.clone()).unwrap().save(&digit).unwrap();
    digit
}

#[test]
fn a_lora_run_trains_and_writes_a_merged_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let set = ["--set", "train.unfreeze_top=0", "--set", "train.lora={ r = 2, alpha = 4.0 }", "--set", "head.epochs=2"];
    let s = json(dir.path(), &[&["vision", "train", cfg, "--json"][..], &set[..]].concat());
    assert_eq!(s["unfreeze_top"], 0);
    assert_eq!(s["lora"], serde_json::json!({ "r": 2, "alpha": 4.0 }));
    // A linear head (1280 x 10 + 10) and rank-2 factors on the 32 1x1 convolutions, r·(in + out)
    // each: 22,784 input-plus-output channels in all.
    assert_eq!(s["trainable_params"], 12_810 + 2 * 22_784);
    let losses: Vec<f64> = s["epoch_losses"].as_array().unwrap().iter().map(|p| p["loss"].as_f64().unwrap()).collect();
    assert!(losses[1] < losses[0], "{losses:?}");
    let model = dir.path().join("run").join("model.safetensors");
    let digit = digit_png(dir.path(), 9);
    let c = json(dir.path(), &["classify", "--model", model.to_str().unwrap(), digit.to_str().unwrap(), "--json"]);
    assert_eq!(c["classes"], 1000);
}

#[test]
fn a_from_scratch_run_trains_every_layer_and_writes_its_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let set = [
        "--set",
        "train.unfreeze_top=0",
        "--set",
        "model.init=\"random\"",
        "--set",
        "head.epochs=4",
        "--set",
        "head.lr=1e-3",
    ];
    let s = json(dir.path(), &[&["vision", "train", cfg, "--json"][..], &set[..]].concat());
    assert_eq!((&s["init"], &s["unfreeze_top"]), (&serde_json::json!("random"), &serde_json::json!(9)));
    let losses: Vec<f64> = s["epoch_losses"].as_array().unwrap().iter().map(|p| p["loss"].as_f64().unwrap()).collect();
    // From random weights on ten digits per class the epoch losses wander; over four epochs
    // the last two stay below the first.
    assert!(losses[2].max(losses[3]) < losses[0], "{losses:?}");
    // The saved network carries the running statistics training learned (not 0 / 1).
    let model = dir.path().join("run").join("model.safetensors");
    let tensors = candle_core::safetensors::load(&model, &candle_core::Device::Cpu).unwrap();
    let var: Vec<f32> = tensors["_bn1.running_var"].to_vec1().unwrap();
    assert!(var.iter().any(|&v| (v - 1.0).abs() > 1e-3), "running variances never moved");
    assert_eq!(tensors["_fc.weight"].dims(), [10, 1280]);
}

#[test]
fn a_coral_run_adapts_to_the_8x8_digits_and_scores_them() {
    let dir = tempfile::tempdir().unwrap();
    let adapt = "\n[adapt]\nmethod = \"coral\"\ntarget = \"digits-8x8\"\ntarget_limit = 40\n";
    let cfg = write_config(dir.path(), adapt);
    let cfg = cfg.to_str().unwrap();
    let s = json(dir.path(), &["vision", "train", cfg, "--set", "head.epochs=2", "--json"]);
    let t = &s["target"];
    assert_eq!(t["dataset"], "digits-8x8");
    // The last fifth of each digit's 174 to 183 images.
    assert_eq!(t["test_examples"], 364);
    let acc = t["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{t}");
    let (h, im) = (t["mean_entropy"].as_f64().unwrap(), t["information_maximization"].as_f64().unwrap());
    assert!(h >= 0.0 && h <= 10f64.ln() + 1e-9 && im.abs() <= 10f64.ln() + 1e-9, "{t}");
    assert_eq!(s["test_examples"], 50, "the source test images are still scored");

    // A frozen backbone cannot adapt.
    let run = common::graft(&["vision", "train", cfg, "--set", "train.unfreeze_top=0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("[adapt] needs a trained backbone"), "{err}");
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    for (set, says) in [
        ("data.label_fraction=0.0", "data.label_fraction = 0"),
        ("train.unfreeze_top=10", "train.unfreeze_top = 10"),
        ("data.dataset=\"cifar\"", "data.dataset = \"cifar\""),
        ("input.crop=16", "input.crop = 16"),
        ("head.colour=1", "colour"),
        ("train.lora={ r = 8, alpha = 16.0 }", "train.lora and train.unfreeze_top = 1 cannot be combined"),
        ("train.lora={ r = 8, alfa = 16.0 }", "alfa"),
        ("model.init=\"random\"", "model.init = \"random\" trains every layer"),
    ] {
        let run = common::graft(&["vision", "train", cfg, "--set", set]).current_dir(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(says), "{set}: {err}");
    }
}

#[test]
fn help_has_an_example() {
    let run = common::graft(&["vision", "train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && help.contains("graft vision train configs/vision-fashion-mnist.toml"), "{help}");
}

#[test]
fn the_vision_training_bench_reports_images_per_second() {
    for mode in ["full", "scratch"] {
        let run = common::graft(&[
            "bench",
            "vision-train",
            "--mode",
            mode,
            "--image",
            "32",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(r["mode"], mode);
        // Every weight of EfficientNet-Lite0 below its ImageNet classifier plus a 10-class head:
        // the count scripts/vision_torch_bench.py reports for its PyTorch model.
        assert_eq!(r["trainable_params"], 3_383_818);
        assert!(r["images_per_s"].as_f64().unwrap() > 0.0 && r["loss_first"].as_f64().unwrap().is_finite(), "{r}");
    }
    let bad = common::graft(&["bench", "vision-train", "--mode", "lora"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--mode lora"));
}
