//! `graft meta` on image episodes: the classes of real image datasets (the 8x8 digits), read by
//! EfficientNet-Lite0 once and kept in a features file; the whole-backbone baseline fine-tunes a
//! copy of EfficientNet-Lite0 per episode; settings that cannot work with images are refused by
//! name.

use candle_core::{DType, Device};
use graft::features::HeadConfig;
use graft::meta::evaluate::fine_tuned_image_backbone;
use graft::meta::Episode;
use graft::models::efficientnet::EfficientNetLite;
use graft::recipes::meta::config::MetaConfig;
use graft::vision::classifier::{image_features, ImageInput};
use graft::vision::preprocess::Preprocess;

/// A config file in `dir` for 5-way 1-shot 2-query episodes over the ten digit classes (five for
/// meta-train, five for meta-test), with a short meta-training and `extra` appended.
fn config(dir: &std::path::Path, extra: &str) -> MetaConfig {
    let path = dir.join("meta.toml");
    let text = format!(
        "[data]\nsource = \"images\"\nimage_sets = [\"digits-8x8\"]\nimages_per_class = 6\nimage_size = 32\n\
         val_fraction = 0.0\ntest_fraction = 0.5\n\n\
         [episodes]\nn_way = 5\nk_shot = 1\nq_query = 2\n\n\
         [backbone]\nencoder = \"efficientnet-lite0\"\n\n\
         [protonet]\nhidden = 16\nsteps = 2\nval_episodes = 0\n\n\
         [anil]\nenabled = false\n\n\
         [eval]\nepisodes = 4\n\n\
         [output]\ndir = {:?}\n{extra}",
        dir.join("run").to_str().unwrap()
    );
    std::fs::write(&path, text).unwrap();
    MetaConfig::load(&path, &[]).unwrap()
}

#[test]
fn image_classes_become_episodes_and_their_features_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let check = graft::recipes::meta::check(&cfg).unwrap();
    assert_eq!(check.examples, 60, "{}", check.note);
    assert_eq!((check.classes.train.len(), check.classes.val.len(), check.classes.test.len()), (5, 0, 5));
    assert!(check
        .classes
        .train
        .iter()
        .chain(&check.classes.test)
        .all(|(name, n)| name.starts_with("digits-8x8:") && *n == 6));

    let first = graft::recipes::meta::run(&cfg, false, &mut |_| {}).unwrap();
    assert!(!first.features_cached);
    let names: Vec<&str> = first.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "protonet"]);
    for r in &first.results {
        assert!((0.0..=1.0).contains(&r.accuracy.mean) && r.accuracy.episodes == 4, "{r:?}");
    }
    // A second run reads the same features back instead of running the backbone again, and its
    // frozen-feature baselines score the same episodes identically.
    let mut second_cfg = config(dir.path(), "");
    second_cfg.output.dir = dir.path().join("run2");
    second_cfg.output.features = Some(dir.path().join("run/features.safetensors"));
    let second = graft::recipes::meta::run(&second_cfg, false, &mut |_| {}).unwrap();
    assert!(second.features_cached);
    assert_eq!(second.results[0].accuracy, first.results[0].accuracy, "nearest centroid on the same features");

    // The whole-backbone baseline joins the others on the first two of the same episodes and
    // leaves every other learner's scores as they were.
    let extra = "[baselines]\nfine_tune = true\nfine_tune_episodes = 2\n[baselines.fine_tune_head]\nepochs = 3\n";
    let mut tuned_cfg = config(dir.path(), extra);
    tuned_cfg.output.dir = dir.path().join("run3");
    tuned_cfg.output.features = Some(dir.path().join("run/features.safetensors"));
    let tuned = graft::recipes::meta::run(&tuned_cfg, false, &mut |_| {}).unwrap();
    let names: Vec<&str> = tuned.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "fine_tuned_encoder", "protonet"]);
    let whole = &tuned.results[2];
    assert!(whole.accuracy.episodes == 2 && (0.0..=1.0).contains(&whole.accuracy.mean), "{whole:?}");
    for (a, b) in [(0, 0), (1, 1), (3, 2)] {
        assert_eq!(tuned.results[a].accuracy, second.results[b].accuracy, "{}", tuned.results[a].learner);
    }
}

/// Three digits of MNIST-5k, two images of each: one shot, one query per way.
fn digit_episode() -> (Vec<graft::vision::Image>, Episode) {
    let set = graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k");
    let mut images = Vec::new();
    for class in 0..3 {
        images.extend(set.images.iter().zip(&set.labels).filter(|(_, &l)| l == class).take(2).map(|(i, _)| i.clone()));
    }
    let ep = Episode {
        ways: vec![0, 1, 2],
        support: vec![0, 2, 4],
        support_labels: vec![0, 1, 2],
        query: vec![1, 3, 5],
        query_labels: vec![0, 1, 2],
    };
    (images, ep)
}

#[test]
fn the_whole_backbone_baseline_trains_a_copy_and_repeats_itself() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let model = EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap();
    let (images, ep) = digit_episode();
    let input = ImageInput {
        preprocess: Preprocess { resize: 32, crop: 32, ..Preprocess::imagenet(32) },
        augment: None,
        batch: 8,
    };
    let refs: Vec<&graft::vision::Image> = images.iter().collect();
    let before = image_features(&model, &refs, &input).unwrap();
    let head = HeadConfig { epochs: 5, lr: 1e-2, ..HeadConfig::default() };
    let first = fine_tuned_image_backbone(&model, &images, 9, &head, &input, &ep).unwrap();
    let again = fine_tuned_image_backbone(&model, &images, 9, &head, &input, &ep).unwrap();
    assert!((0.0..=1.0).contains(&first) && first == again, "{first} then {again}");
    // The units trained on a copy: the model's own features are bit for bit what they were.
    let after = image_features(&model, &refs, &input).unwrap();
    let diff = (before - after).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0, "the base model changed");
    // More units than EfficientNet-Lite0 has are refused by name.
    let err = fine_tuned_image_backbone(&model, &images, 10, &head, &input, &ep).unwrap_err().to_string();
    assert!(err.contains("it has 9"), "{err}");
}

#[test]
fn settings_that_need_text_are_refused_for_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let image_backbone = "[backbone]\nencoder = \"efficientnet-lite0\"\n";
    for (data, rest, why) in [
        ("", "[backbone]\nencoder = \"all-minilm-l6-v2\"\n", "needs an image backbone"),
        (
            "",
            &*format!("{image_backbone}[baselines]\nfine_tune = true\nfine_tune_layers = 10\n"),
            "baselines.fine_tune_layers = 10: EfficientNet-Lite0 has 9 units",
        ),
        ("images_per_class = 3\n", image_backbone, "images_per_class = 3 is below k_shot + q_query = 20"),
    ] {
        let data = format!("[data]\nsource = \"images\"\n{data}{rest}");
        std::fs::write(&path, format!("{data}[output]\ndir = \"run\"\n")).unwrap();
        let err = MetaConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains(why), "{data}: {err}");
    }
}
