//! `graft meta` on image episodes: the classes of real image datasets (the 8x8 digits), read by
//! EfficientNet-Lite0 once and kept in a features file; settings that cannot work with images
//! are refused by name.

use graft::recipes::meta::config::MetaConfig;

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
}

#[test]
fn settings_that_need_text_are_refused_for_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let image_backbone = "[backbone]\nencoder = \"efficientnet-lite0\"\n";
    for (data, rest, why) in [
        ("", "[backbone]\nencoder = \"all-minilm-l6-v2\"\n", "needs an image backbone"),
        ("", &*format!("{image_backbone}[baselines]\nfine_tune = true\n"), "not available for images"),
        ("images_per_class = 3\n", image_backbone, "images_per_class = 3 is below k_shot + q_query = 20"),
    ] {
        let data = format!("[data]\nsource = \"images\"\n{data}{rest}");
        std::fs::write(&path, format!("{data}[output]\ndir = \"run\"\n")).unwrap();
        let err = MetaConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains(why), "{data}: {err}");
    }
}
