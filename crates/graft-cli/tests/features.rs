//! `graft features progressive` end to end on real tweets and all-MiniLM-L6-v2: two tasks learned
//! in order give a lower-triangular accuracy matrix whose first task's accuracy is unchanged by
//! the second, a network file that loads with both tasks, the table on stdout; data errors name
//! the file and line; columns of encoder blocks (`[encoder_columns]`) run the same way; image
//! tasks (the classes of real image datasets) read EfficientNet-Lite0's features.

use std::path::Path;
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn write_jsonl(path: &Path, rows: &[(String, &str)]) {
    let lines: Vec<String> = rows.iter().map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Sentiment (3 labels) and polarity (non-neutral tweets only) files in `dir`, and a config.
fn setup(dir: &Path) -> std::path::PathBuf {
    let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
    let tweets = graft::datasets::tweets::read(&corpus).unwrap();
    let (train, eval) = graft::datasets::tweets::split(&tweets, 90, 40, 3);
    let labels = graft::datasets::tweets::LABELS;
    let sentiment = |ts: &[graft::datasets::tweets::Tweet]| -> Vec<(String, &str)> {
        ts.iter().map(|t| (t.text.clone(), labels[t.label])).collect()
    };
    let polarity = |ts: &[graft::datasets::tweets::Tweet]| -> Vec<(String, &str)> {
        ts.iter().filter(|t| t.label != 1).map(|t| (t.text.clone(), labels[t.label])).collect()
    };
    write_jsonl(&dir.join("sentiment.train.jsonl"), &sentiment(&train));
    write_jsonl(&dir.join("sentiment.eval.jsonl"), &sentiment(&eval));
    write_jsonl(&dir.join("polarity.train.jsonl"), &polarity(&train));
    write_jsonl(&dir.join("polarity.eval.jsonl"), &polarity(&eval));
    let config = dir.join("progressive.toml");
    let out = dir.join("run");
    std::fs::write(
        &config,
        format!(
            "[head]\nhidden = [16]\nepochs = 4\n\n\
             [[tasks]]\nname = \"sentiment\"\ntrain = \"sentiment.train.jsonl\"\neval = \"sentiment.eval.jsonl\"\n\n\
             [[tasks]]\nname = \"polarity\"\ntrain = \"polarity.train.jsonl\"\neval = \"polarity.eval.jsonl\"\n\n\
             [output]\ndir = {:?}\n",
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

#[test]
fn two_tasks_give_the_accuracy_matrix_and_a_loadable_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let run = graft(&["features", "progressive", config.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let acc = summary["accuracy"].as_array().unwrap();
    assert_eq!(acc.len(), 2);
    assert!(acc[0][1].is_null(), "polarity is not learned after the first stage: {acc:?}");
    assert_eq!(acc[0][0], acc[1][0], "sentiment's accuracy is unchanged by learning polarity");
    for a in [&acc[0][0], &acc[1][1]] {
        assert!((0.0..=1.0).contains(&a.as_f64().unwrap()), "{a}");
    }
    assert_eq!(summary["tasks"][0]["labels"], serde_json::json!(["negative", "neutral", "positive"]));
    assert_eq!(summary["tasks"][1]["labels"], serde_json::json!(["negative", "positive"]));
    assert_eq!(summary["tasks"][0]["train_examples"], 90);
    let out = dir.path().join("run");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk, summary);
    for k in ["0-sentiment", "1-polarity"] {
        assert!(out.join("columns").join(k).join("metrics.jsonl").is_file(), "{k}'s metrics");
    }
    let net =
        graft::features::ProgressiveNet::load(&out.join("progressive.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(net.tasks(), ["sentiment", "polarity"]);

    // A second run into the same folder is refused; the table form prints the matrix.
    let again = graft(&["features", "progressive", config.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a progressive network"));
    let other = dir.path().join("run2");
    let set = format!("output.dir={:?}", other.to_str().unwrap());
    let table = graft(&["features", "progressive", config.to_str().unwrap(), "--set", &set, "--set", "head.epochs=1"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("after sentiment") && text.contains("after polarity") && text.contains(" -"), "{text}");
}

/// `[encoder_columns]`: the columns are copies of the encoder's top block with lateral adapters;
/// the first task's accuracy is again unchanged by the second, and the network file loads on
/// the encoder.
#[test]
fn encoder_block_columns_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let out = dir.path().join("blocks");
    let set = format!("output.dir={:?}", out.to_str().unwrap());
    let args = ["--set", "encoder_columns.top_layers=1", "--set", "encoder_columns.epochs=1", "--set", &set, "--json"];
    let mut all = vec!["features", "progressive", config.to_str().unwrap()];
    all.extend(args);
    let run = graft(&all);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let acc = summary["accuracy"].as_array().unwrap();
    assert_eq!(acc[0][0], acc[1][0], "sentiment's accuracy is unchanged by learning polarity");
    assert_eq!(summary["encoder_columns"]["top_layers"], 1);
    // One MiniLM block (1,774,464 weights) and a 3-class head; the second column adds a lateral
    // into its head (rank 16: 2 × 16 × 384) and a 2-class head.
    assert_eq!(summary["tasks"][0]["column_params"], 1_774_464 + 384 * 3 + 3);
    assert_eq!(summary["tasks"][1]["column_params"], 1_774_464 + 2 * 16 * 384 + 384 * 2 + 2);
    let dir_enc = graft::assets::ensure("all-minilm-l6-v2", false).unwrap();
    let enc = graft::models::bert::SentenceEncoder::from_hf_folder(
        &dir_enc,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let net =
        graft::features::progressive::ProgressiveEncoder::load(&out.join("progressive.safetensors"), enc).unwrap();
    let tasks: Vec<&str> = net.columns().iter().map(|c| c.task()).collect();
    assert_eq!(tasks, ["sentiment", "polarity"]);

    let bad = graft(&["features", "progressive", config.to_str().unwrap(), "--set", "encoder_columns.top_layers=9"]);
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("between 1 and the encoder's 6 blocks"));
    let bad = graft(&["features", "progressive", config.to_str().unwrap(), "--set", "cnn_columns.top_units=2"]);
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[cnn_columns] copies EfficientNet-Lite0's units"));
}

/// Image tasks: the 8x8 digits, then the same digits again under another name, through the
/// frozen EfficientNet-Lite0 at 32 x 32, as MLP-head columns and as `[cnn_columns]` (copies of
/// its top two units); a task that mixes images and files, and image tasks with
/// `[encoder_columns]`, are refused by name.
#[test]
fn image_tasks_learn_columns_on_image_features() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("images.toml");
    let out = dir.path().join("run");
    let task = |name: &str| {
        format!(
            "[[tasks]]\nname = \"{name}\"\nimages = \"digits-8x8\"\ntrain_per_class = 6\neval_per_class = 3\nimage_size = 32\n\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[backbone]\nencoder = \"efficientnet-lite0\"\n\n[head]\nhidden = [8]\nepochs = 3\n\n{}{}[output]\ndir = {:?}\n",
            task("digits"),
            task("digits-again"),
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    let run = graft(&["features", "progressive", config.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let acc = summary["accuracy"].as_array().unwrap();
    assert_eq!(acc[0][0], acc[1][0], "the first task's accuracy is unchanged by learning the second");
    assert!((0.0..=1.0).contains(&acc[1][1].as_f64().unwrap()), "{acc:?}");
    let labels: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(summary["tasks"][0]["labels"], serde_json::json!(labels));
    assert_eq!(
        (summary["tasks"][0]["train_examples"].as_u64(), summary["tasks"][0]["eval_examples"].as_u64()),
        (Some(60), Some(30))
    );
    // A 1280 -> 8 -> 10 column (and its standardisation); the second adds a lateral into its output layer.
    let net =
        graft::features::ProgressiveNet::load(&out.join("progressive.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(net.tasks(), ["digits", "digits-again"]);
    assert_eq!(net.dim(), 1280);

    let bad = graft(&["features", "progressive", config.to_str().unwrap(), "--set", "encoder_columns.top_layers=1"]);
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("image tasks use [cnn_columns] or MLP-head columns"));

    // `[cnn_columns]`: the columns copy EfficientNet-Lite0's top two units, with laterals.
    let cnn = dir.path().join("cnn");
    let set = format!("output.dir={:?}", cnn.to_str().unwrap());
    let args = ["--set", "cnn_columns.top_units=2", "--set", "cnn_columns.epochs=2", "--set", &set, "--json"];
    let run = graft(&[&["features", "progressive", config.to_str().unwrap()][..], &args].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let acc = summary["accuracy"].as_array().unwrap();
    assert_eq!(acc[0][0], acc[1][0], "the first task's accuracy is unchanged by learning the second");
    assert_eq!(summary["cnn_columns"]["top_units"], 2);
    let path = graft::assets::ensure("efficientnet-lite0", true).unwrap();
    let base =
        graft::models::efficientnet::EfficientNetLite::load(&path, &candle_core::Device::Cpu, candle_core::DType::F32)
            .unwrap();
    let net = graft::features::progressive::ProgressiveCnn::load(&cnn.join("progressive.safetensors"), base).unwrap();
    assert_eq!(net.columns().iter().map(|c| c.task()).collect::<Vec<_>>(), ["digits", "digits-again"]);
    assert_eq!(summary["trainable_params"], net.trainable_params().unwrap());
    let both = dir.path().join("both.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen("images = ", "train = \"x.jsonl\"\nimages = ", 1);
    std::fs::write(&both, text).unwrap();
    let bad = graft(&["features", "progressive", both.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("task `digits`: give either `images` or `train`"));
}

#[test]
fn an_eval_label_outside_the_training_labels_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let eval = dir.path().join("polarity.eval.jsonl");
    let mut text = std::fs::read_to_string(&eval).unwrap();
    text.push_str("{\"text\": \"meh\", \"label\": \"neutral\"}\n");
    let line = text.lines().count();
    std::fs::write(&eval, text).unwrap();
    let run = graft(&["features", "progressive", config.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(3), "{}", String::from_utf8_lossy(&run.stderr));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&format!("polarity.eval.jsonl:{line}: label `neutral`")), "{err}");
    let help = graft(&["features", "progressive", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("graft features progressive progressive.toml"));
}
