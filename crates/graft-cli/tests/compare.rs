//! `graft compare` end to end on real tweets and the real MiniLM encoder, with a small decoder
//! (the default model's tokenizer and chat template, two narrow layers of seeded random weights,
//! written as a Hugging Face folder) so that all ten techniques run in CI time: every technique
//! produces a row, the files are written, trainable-parameter counts follow from the model's
//! shapes, every fine-tuning lowers the held-out loss and every head its training loss, the
//! encoder probe labels its own training tweets, the from-scratch run starts from other weights,
//! the learning curve has its points, finished results are reused, and bad configs fail with the
//! key named. The default model itself is exercised by the quick-start test and the library's
//! fine-tuning tests.

mod common;

use common::{small_config, write_small_model};
use std::path::Path;
use std::process::Command;

fn graft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("compare.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn every_technique_gets_a_row_and_the_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let model = dir.path().join("small-model");
    write_small_model(&model);
    let cfg = write_config(
        dir.path(),
        &format!(
            "[task]\nn_train = 24\nn_test = 12\n[model]\nname = {:?}\n[train]\nsteps = 2\nbatch_size = 4\nwarmup_steps = 0\neval_batches = 1\n\
             [probe.head]\nepochs = 20\n[learning_curve]\nfractions = [0.25, 1.0]\ntechniques = [\"lora\"]\n[output]\ndir = {:?}\n",
            model.to_str().unwrap(),
            out.to_str().unwrap()
        ),
    );
    let run = graft(&["compare", &cfg, "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["technique"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "zero_shot",
            "few_shot",
            "linear_probe",
            "encoder_probe",
            "decoder_head",
            "soft_prompt",
            "prefix",
            "lora",
            "full",
            "scratch"
        ]
    );
    let row = |name: &str| rows.iter().find(|r| r["technique"] == name).unwrap();
    for r in rows {
        let acc = r["accuracy"].as_f64().unwrap();
        let f1 = r["macro_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&f1), "{r}");
        assert!(r["peak_rss_mb"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!((report["n_train"].as_u64(), report["n_test"].as_u64()), (Some(24), Some(12)));

    // Trainable parameters from the small decoder's shapes: hidden 64, 2 layers, 4 query heads
    // and 2 key/value heads of 16, MLP 128, the default vocabulary; 3 classes.
    let c = small_config();
    let (h, layers, kv, ff, vocab) = (64u64, 2u64, 2 * 16u64, 128u64, c.vocab_size as u64);
    let lora_per_layer = 8 * ((h + h) * 2 + (h + kv) * 2 + (h + ff) * 3);
    assert_eq!(row("lora")["trainable_params"].as_u64().unwrap(), lora_per_layer * layers);
    assert_eq!(row("soft_prompt")["trainable_params"].as_u64().unwrap(), 20 * h);
    assert_eq!(row("prefix")["trainable_params"].as_u64().unwrap(), 20 * layers * 2 * kv);
    assert_eq!(row("zero_shot")["trainable_params"], 0);
    assert_eq!(row("few_shot")["trainable_params"], 0);
    let per_layer = 2 * h + 2 * (h * h + h * kv) + 3 * h * ff;
    assert_eq!(row("full")["trainable_params"].as_u64().unwrap(), vocab * h + layers * per_layer + h);
    assert_eq!(row("full")["trainable_params"], row("scratch")["trainable_params"]);
    assert_eq!(row("linear_probe")["trainable_params"].as_u64().unwrap(), h * 3 + 3);
    assert_eq!(row("encoder_probe")["trainable_params"].as_u64().unwrap(), 384 * 3 + 3);
    assert_eq!(row("decoder_head")["trainable_params"].as_u64().unwrap(), layers * per_layer + h + h * 3 + 3);

    // Two optimizer steps each, from the same weights except for `scratch`, which starts from
    // freshly drawn ones.
    for name in ["soft_prompt", "prefix", "lora", "full", "scratch"] {
        assert_eq!(row(name)["losses"].as_array().unwrap().len(), 2, "{name}");
    }
    let first = |name: &str| row(name)["losses"][0]["loss"].as_f64().unwrap();
    assert!(
        (first("lora") - first("full")).abs() < 1e-4 * first("full"),
        "lora {} full {}",
        first("lora"),
        first("full")
    );
    assert!((first("scratch") - first("full")).abs() > 1e-3, "scratch {} full {}", first("scratch"), first("full"));
    assert_eq!(row("encoder_probe")["losses"].as_array().unwrap().len(), 20);

    // Training works (fixed seeds, CPU arithmetic: the same numbers every run). Every fine-tuning
    // lowers the held-out loss of the answers, before and after, from the run's summary (measured
    // drops: soft_prompt 0.30, prefix 0.027, lora 0.070, full 0.039, scratch 0.54 nats from about
    // 10.8 = ln(vocab), the random decoder's level); every head's loss on its own training rows falls
    // over its 20 epochs (to 0.13, 0.0003 and 0.04 of the first epoch's); and the encoder probe
    // labels its 24 training tweets correctly (measured: all; chance is 1/3).
    for name in ["soft_prompt", "prefix", "lora", "full", "scratch"] {
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(name).join("summary.json")).unwrap()).unwrap();
        let (before, after) =
            (summary["base_eval_loss"].as_f64().unwrap(), summary["final_eval_loss"].as_f64().unwrap());
        assert!(after < before - 0.01, "{name}: held-out loss {before} -> {after}");
    }
    for name in ["linear_probe", "encoder_probe", "decoder_head"] {
        let losses = row(name)["losses"].as_array().unwrap();
        let (first, last) = (losses[0]["loss"].as_f64().unwrap(), losses[19]["loss"].as_f64().unwrap());
        assert!(last < 0.5 * first, "{name}: epoch loss {first} -> {last}");
    }
    let train_acc = encoder_probe_on_its_training_rows(&out.join("encoder_probe/head.safetensors"), 24, 12);
    assert!(train_acc >= 0.9, "encoder_probe: {train_acc} of its training tweets right");

    // Learning curve: 25% = 6 tweets trained anew, 100% reuses the table's LoRA row.
    let curve = report["learning_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 2);
    assert_eq!(curve[0]["n_train"], 6);
    assert_eq!(curve[1]["accuracy"], row("lora")["accuracy"]);
    assert!(out.join("curve/lora-6/result.json").is_file());
    assert!(!out.join("full/checkpoints").exists(), "finished runs keep no checkpoint");
    assert!(out.join("full/model/config.json").is_file());

    for f in [
        "compare.md",
        "compare.json",
        "report.html",
        "lora/adapter/adapter_config.json",
        "encoder_probe/head.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(on_disk, report);
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| scratch |") || md.contains("| scratch "), "{md}");

    // Run again with the same settings: the finished result is reused, not recomputed.
    let again =
        graft(&["compare", &cfg, "--set", "techniques=[\"lora\"]", "--set", "learning_curve.fractions=[]", "--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("lora: reusing the result"));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(&again["rows"][0], row("lora"));
}

/// Accuracy of the saved encoder-probe head on the tweets it was trained on (the split of
/// `graft compare` with seed 42), through the real MiniLM encoder.
fn encoder_probe_on_its_training_rows(head: &Path, n_train: usize, n_test: usize) -> f64 {
    use graft::datasets::tweets;
    let all = tweets::read(&graft::assets::ensure("tweets", false).unwrap()).unwrap();
    let (train, _) = tweets::split(&all, n_train, n_test, 42);
    let device = candle_core::Device::Cpu;
    let encoder = graft::models::bert::SentenceEncoder::load(
        &graft::assets::resolve_model("all-minilm-l6-v2", false).unwrap(),
        &device,
        candle_core::DType::F32,
    )
    .unwrap();
    let texts: Vec<String> = train.iter().map(|t| t.text.clone()).collect();
    let features = graft::features::encoder_features(&encoder, &texts, 16).unwrap();
    let pred = graft::features::TrainedHead::load(head, &device).unwrap().predict(&features).unwrap();
    pred.iter().zip(&train).filter(|(p, t)| **p == t.label).count() as f64 / train.len() as f64
}

#[test]
fn bad_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expect) in [
        ("[train]\nstepz = 3\n", "stepz"),
        ("techniques = [\"lora\", \"telepathy\"]\n", "telepathy"),
        ("[prompt]\ninstruction = \"no slot here\"\n", "{text}"),
        ("[learning_curve]\nfractions = [1.5]\n", "learning_curve.fractions"),
    ] {
        let cfg = write_config(dir.path(), body);
        let out = graft(&["compare", &cfg]);
        assert!(!out.status.success(), "{body} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{body}: {err}");
    }
}

#[test]
fn a_model_without_a_chat_template_is_asked_in_plain_text_and_full_training_of_gemma3_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let body = |techniques: &str| {
        format!(
            "techniques = [{techniques}]\n[task]\nn_train = 8\nn_test = 6\n[model]\nname = \"gemma3-270m\"\n[few_shot]\nk = 2\n\
             [train]\nsteps = 1\nbatch_size = 4\nseq_len = 96\nwarmup_steps = 0\neval_batches = 1\n[output]\ndir = {:?}\n",
            out.to_str().unwrap()
        )
    };
    // Gemma-3-270M is a base model without a chat template: prompting and LoRA run on plain
    // prompts (the instruction, then `Answer:` on a line of its own) and score by label scoring.
    let cfg = write_config(dir.path(), &body("\"zero_shot\", \"few_shot\", \"lora\""));
    let run = graft(&["compare", &cfg, "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{report}");
    for row in rows {
        let acc = row["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{row}");
    }
    let test_rows = std::fs::read_to_string(out.join("data/test.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(test_rows.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].as_str().unwrap().ends_with("\n\nAnswer:\n"), "{first}");
    assert!(first.get("messages").is_none(), "{first}");

    // `full` and `scratch` would have to save a fully trained Gemma 3: refused before anything runs.
    let cfg = write_config(dir.path(), &body("\"lora\", \"full\", \"scratch\""));
    let run = graft(&["compare", &cfg, "--rerun"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("full, scratch") && err.contains("Gemma 3"), "{err}");
}
