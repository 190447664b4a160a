//! Whisper in Hugging Face layout: tiny.en exported by graft (`speech::export::write_hf_folder`)
//! is what transformers loads without a missing or unexpected key and decodes to CTranslate2's
//! tokens (`tests/golden/speech/whisper-hf.json`, by `scripts/whisper-hf-reference.py` on this
//! export); graft reads the folder back to the same tokens and encoder output; an export with a
//! LoRA adapter merged in computes what the adapted model computes; broken folders are refused
//! naming the problem.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::adapters::lora::{self, LoraLayer, LoraSpec};
use graft::models::whisper::Pass;
use graft::speech::audio::load_audio;
use graft::speech::export::write_hf_folder;
use graft::speech::transcribe::{TranscribeOptions, Transcriber};
use std::path::{Path, PathBuf};

fn clip(name: &str) -> PathBuf {
    common::golden_dir().join("speech").join(format!("{name}.wav"))
}

fn tiny_en() -> Transcriber {
    let dir = graft::assets::ensure("whisper-tiny-en", false).expect("fetch model");
    Transcriber::open(&dir, &Device::Cpu, DType::F32).unwrap()
}

fn greedy(tr: &Transcriber, name: &str, max_new_tokens: usize) -> Vec<u32> {
    let opts = TranscribeOptions { language: None, beam_size: 1, max_new_tokens };
    tr.transcribe(&load_audio(&clip(name)).unwrap(), &opts).unwrap().tokens
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn the_export_is_what_transformers_loads_and_graft_reads_back() {
    let golden = common::golden_json("speech/whisper-hf.json");
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert_eq!(golden["loading"][key], serde_json::json!([]), "transformers reported {key}");
    }
    let ct2 = common::golden_json("speech/whisper.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-en-hf");
    let summary = write_hf_folder(&tiny_en(), &out, DType::F32).unwrap();
    assert_eq!((summary.tensors, summary.parameters), (167, 37_760_256));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "whisper");
    assert_eq!((config["d_model"].as_u64(), config["decoder_layers"].as_u64()), (Some(384), Some(4)));

    let back = Transcriber::open(&out, &Device::Cpu, DType::F32).unwrap();
    assert!(!back.multilingual());
    let max_new = golden["max_new_tokens"].as_u64().unwrap() as usize;
    for name in ["en", "de", "es"] {
        let reference = ids(&golden["clips"][name]["greedy"]["ids"]);
        assert_eq!(reference, ids(&ct2["models"]["tiny-en"]["clips"][name]["greedy"]["ids"]), "{name}");
        assert_eq!(greedy(&back, name, max_new), reference, "{name}: graft on its own export");
        // The encoder output's summary against transformers' on its own log-mel.
        let samples = load_audio(&clip(name)).unwrap();
        let enc = back.encode_window(&samples, Pass::Infer).unwrap().flatten_all().unwrap();
        let e = &golden["clips"][name]["encoder"];
        let mean = enc.mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let max = enc.max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((mean - e["mean"].as_f64().unwrap()).abs() < 1e-5, "{name}: mean {mean} vs {}", e["mean"]);
        assert!((max - e["max"].as_f64().unwrap()).abs() < 1e-3, "{name}: max {max} vs {}", e["max"]);
    }
}

#[test]
fn an_export_with_a_merged_adapter_computes_the_adapted_model() {
    let mut tr = tiny_en();
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, rslora: false, targets: vec!["fc1".into(), "v_proj".into()] };
    // Non-zero factors on both sides, so the adapter changes every output.
    lora::attach_with(tr.model_mut(), &spec, |name, (out, inp), clock| {
        let a = Tensor::randn(0f32, 0.05, (4, inp), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.05, (out, 4), &Device::Cpu)?;
        LoraLayer::from_tensors(name, &a, &b, spec.scale(), 0.0, clock)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    write_hf_folder(&tr, &out, DType::F32).unwrap();
    let back = Transcriber::open(&out, &Device::Cpu, DType::F32).unwrap();

    let samples = load_audio(&clip("en")).unwrap();
    let tokens = Tensor::new(&[[50257u32, 50362, 3469, 509]], &Device::Cpu).unwrap();
    let logits = |t: &Transcriber| {
        let audio = t.encode_window(&samples, Pass::Infer).unwrap();
        t.model().decode_logits(&tokens, &audio, Pass::Infer).unwrap()
    };
    let (adapted, merged) = (logits(&tr), logits(&back));
    let diff = common::max_abs_diff(&adapted, &merged);
    assert!(diff < 2e-3, "merged export differs from the adapted model by {diff}");
    let base = logits(&tiny_en());
    assert!(common::max_abs_diff(&adapted, &base) > 0.1, "the adapter must change the outputs");
}

/// Writes `dir` as a copy of the export `from` with `edit` applied to its tensors.
fn edited(from: &Path, dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(from.join(f), dir.join(f)).unwrap();
    }
    let mut t = candle_core::safetensors::load(from.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

#[test]
fn broken_hf_folders_are_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    write_hf_folder(&tiny_en(), &good, DType::F16).unwrap();
    let open = |p: &Path| Transcriber::open(p, &Device::Cpu, DType::F32).err().map(|e| e.to_string());
    assert_eq!(open(&good), None, "the f16 export reads back");

    let missing = dir.path().join("missing");
    edited(&good, &missing, |t| {
        t.remove("model.decoder.layers.2.fc2.weight");
    });
    let err = open(&missing).unwrap();
    assert!(err.contains("model.decoder.layers.2.fc2.weight"), "{err}");

    let extra = dir.path().join("extra");
    edited(&good, &extra, |t| {
        t.insert("model.decoder.layers.9.fc1.weight".into(), Tensor::zeros((2, 2), DType::F16, &Device::Cpu).unwrap());
    });
    let err = open(&extra).unwrap();
    assert!(err.contains("does not use") && err.contains("layers.9.fc1"), "{err}");

    let shape = dir.path().join("shape");
    edited(&good, &shape, |t| {
        t.insert("model.encoder.layers.0.fc1.bias".into(), Tensor::zeros(7, DType::F16, &Device::Cpu).unwrap());
    });
    let err = open(&shape).unwrap();
    assert!(err.contains("model.encoder.layers.0.fc1.bias") && err.contains("[7]"), "{err}");

    let untied = dir.path().join("untied");
    edited(&good, &untied, |t| {
        let e = t["model.decoder.embed_tokens.weight"].clone();
        t.insert("proj_out.weight".into(), (e + 1.0).unwrap());
    });
    assert!(open(&untied).unwrap().contains("proj_out.weight"));

    let config = good.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"whisper\"", "\"bert\"");
    std::fs::write(&config, text).unwrap();
    let err = open(&good).unwrap();
    assert!(err.contains("model_type"), "{err}");
}
