//! `graft speech train` on Whisper tiny.en and the committed clips (`tests/golden/speech`:
//! English, German and Spanish sentences spoken by espeak-ng): LoRA on the decoder learns the
//! clips' transcripts (the held-out loss and the WER fall), the adapter is a PEFT folder with
//! Hugging Face Whisper names, a killed run resumes bit-identically (its encoder states read
//! from the encoder cache the uninterrupted run filled), full fine-tuning of an
//! encoder projection runs the encoder at every step and writes the trained weights, and bad
//! configs are refused naming the key.

mod common;

use graft::recipes::speech_train::config::{SpeechAdapterKind, SpeechTrainConfig};
use graft::recipes::speech_train::run;
use graft::train::schedule::ScheduleKind;
use std::path::Path;

/// LoRA r 8 on every decoder projection of tiny.en, trained and scored on the three clips.
fn config(dir: &Path, name: &str) -> SpeechTrainConfig {
    let data = common::speech_clips_manifest(dir);
    let text = format!(
        r#"
[model]
name = "whisper-tiny-en"

[data]
train = "{data}"
eval = "{data}"

[adapter]
r = 8
alpha = 16.0

[train]
max_steps = 8
batch_size = 3
lr = 2e-3
schedule = "constant"

[decode]
max_new_tokens = 32
resamples = 200

[output]
dir = "{out}"
"#,
        data = data.display(),
        out = dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let cfg = SpeechTrainConfig::load(&path, &[]).unwrap();
    assert_eq!(cfg.train.schedule, ScheduleKind::Constant);
    cfg
}

#[test]
fn decoder_lora_learns_the_clips_and_writes_a_peft_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "lora");
    let s = run(&cfg, false, &mut |_| {}).unwrap();
    assert!(!s.encoder_trained, "decoder-only LoRA keeps the encoder frozen");
    assert_eq!((s.train_clips, s.eval_clips, s.steps), (3, 3, 8));
    // tiny.en has 4 decoder blocks of 10 projections (q, k, v, out of self- and
    // cross-attention, 384 -> 384; fc1 384 -> 1536 and fc2 back); r 8 adds 8 (in + out) each.
    let per_block = 8 * (384 + 384) * 8 + 2 * 8 * (384 + 1536);
    assert_eq!(s.trainable_params, 4 * per_block);
    assert!(s.final_eval_loss < 0.3 * s.base_eval_loss, "loss {} -> {}", s.base_eval_loss, s.final_eval_loss);
    let eval = &s.scores["eval"];
    assert_eq!(eval.clips, 3);
    // The German and Spanish clips through the English-only model start far off.
    assert!(eval.before.overall.wer > 0.5, "{:?}", eval.before.overall);
    assert!(eval.after.overall.wer < eval.before.overall.wer, "{:?} -> {:?}", eval.before.overall, eval.after.overall);
    assert_eq!(eval.after.languages.keys().collect::<Vec<_>>(), ["de", "en", "es"]);
    let hyps = std::fs::read_to_string(&eval.after_hypotheses).unwrap();
    assert_eq!(hyps.lines().count(), 3);
    assert!(hyps.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["audio"].is_string()));

    // A PEFT folder over Hugging Face Whisper names.
    let adapter = cfg.output.dir.join("adapter");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["task_type"], "SEQ_2_SEQ_LM");
    assert_eq!(config["r"], 8);
    let tensors =
        candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 2 * 4 * 10);
    let a = &tensors["base_model.model.model.decoder.layers.3.encoder_attn.v_proj.lora_A.weight"];
    assert_eq!(a.dims(), [8, 384]);
    assert!(!tensors.keys().any(|k| k.contains("encoder.layers")), "no encoder adapter");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.output.dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["scores"]["eval"]["before"]["normaliser"], "whisper-basic");
    assert_reloaded_transcripts_equal(&cfg, &adapter, &eval.after_hypotheses);
}

/// The base model with what a run wrote (`trained`: adapter folder or weights file) applied
/// transcribes the run's clips as the run's own model did after training.
fn assert_reloaded_transcripts_equal(cfg: &SpeechTrainConfig, trained: &Path, hypotheses: &Path) {
    use graft::speech::transcribe::{TranscribeOptions, Transcriber};
    let folder = graft::assets::ensure("whisper-tiny-en", false).unwrap();
    let mut tr = Transcriber::open(&folder, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    tr.apply_trained(trained).unwrap();
    let opts = TranscribeOptions { language: None, beam_size: 1, max_new_tokens: cfg.decode.max_new_tokens };
    for line in std::fs::read_to_string(hypotheses).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let audio = cfg.data.eval.parent().unwrap().join(v["audio"].as_str().unwrap());
        let samples = graft::speech::audio::load_audio(&audio).unwrap();
        let text = tr.transcribe(&samples, &opts).unwrap().text;
        assert_eq!(text, v["text"].as_str().unwrap(), "{}", audio.display());
    }
}

#[test]
fn a_killed_speech_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut whole = config(dir.path(), "whole");
    (whole.train.max_steps, whole.train.save_every, whole.train.batch_size) = (Some(4), 2, 2);
    // The whole run fills an encoder cache; the killed and resumed one reads every state from it.
    whole.data.encoder_cache = Some(dir.path().join("encoder-cache"));
    run(&whole, false, &mut |_| {}).unwrap();
    let mut parts = whole.clone();
    parts.output.dir = dir.path().join("parts");
    common::killed_at(3, |on_event| run(&parts, false, on_event));
    let mut notes = Vec::new();
    run(&parts, true, &mut |e| {
        if let graft::train::Event::Note(n) = e {
            notes.push(n)
        }
    })
    .unwrap();
    assert!(notes.iter().any(|n| n.contains("3 from the encoder cache")), "{notes:?}");
    assert_eq!(common::metrics_without_timing(&whole.output.dir), common::metrics_without_timing(&parts.output.dir));
    let weights = |run: &Path| std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(weights(&whole.output.dir), weights(&parts.output.dir), "resumed adapter differs");
}

#[test]
fn full_training_of_an_encoder_projection_runs_the_encoder_and_saves_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "full");
    cfg.adapter.kind = SpeechAdapterKind::Full;
    cfg.adapter.targets = vec!["encoder.layers.3.fc2".into(), "decoder.layers.0.fc1".into()];
    (cfg.train.max_steps, cfg.train.lr) = (Some(2), 1e-4);
    let s = run(&cfg, false, &mut |_| {}).unwrap();
    assert!(s.encoder_trained);
    assert_eq!(s.trainable_params, (1536 * 384 + 384) + (384 * 1536 + 1536));
    assert!(s.final_eval_loss.is_finite() && s.final_eval_loss < s.base_eval_loss, "{s:?}");
    let tensors =
        candle_core::safetensors::load(cfg.output.dir.join("trained.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model.decoder.layers.0.fc1.bias",
            "model.decoder.layers.0.fc1.weight",
            "model.encoder.layers.3.fc2.bias",
            "model.encoder.layers.3.fc2.weight"
        ]
    );
    assert_reloaded_transcripts_equal(
        &cfg,
        &cfg.output.dir.join("trained.safetensors"),
        &s.scores["eval"].after_hypotheses,
    );
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let write_and_load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        SpeechTrainConfig::load(&path, &[]).unwrap_err().to_string()
    };
    let base = "[data]\ntrain = \"t.jsonl\"\neval = \"e.jsonl\"\n";
    let err = write_and_load(&format!("{base}[adapter]\nrank = 4\n"));
    assert!(err.contains("rank"), "{err}");
    let err = write_and_load(&format!("{base}[adapter]\ntargets = []\n"));
    assert!(err.contains("adapter.targets"), "{err}");
    let err = write_and_load(&format!("{base}[train]\ngradient_checkpointing = true\n"));
    assert!(err.contains("gradient_checkpointing"), "{err}");
    let err = write_and_load(&format!("{base}[model]\ndtype = \"bf16\"\n"));
    assert!(err.contains("model.dtype"), "{err}");
    let err = write_and_load("[model]\nname = \"whisper-base\"\n");
    assert!(err.contains("data"), "{err}");
}
