//! Model files on the way in and out: the Hugging Face folder round trip, PEFT adapters, and
//! clear errors for models graft cannot build.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use graft::adapters::lora::{self, LoraSpec};
use graft::assets::ModelSource;
use graft::io::gguf::{GgufFile, GgufWriter};
use graft::models::llama::LoadOptions;
use graft::models::load::load_causal_lm;
use graft::models::Model;
use graft::tokenizer::Tokenizer;

fn prompt() -> Tensor {
    Tensor::new(&[504u32, 3575, 282, 4649, 314], &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

#[test]
fn hf_folder_round_trip_gives_identical_logits_and_tokenizer() {
    let model = common::default_llama();
    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("smollm2-hf");
    graft::io::hf_folder::write_llama_folder(&model, &tok, &folder, DType::F32).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(folder.join(f).is_file(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["num_key_value_heads"], 3);
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(tc["chat_template"].as_str().is_some_and(|t| t.contains("im_start")));

    let back = load_causal_lm(&ModelSource::HfFolder(folder.clone()), &LoadOptions::default()).unwrap();
    let a = model.forward_train(&prompt()).unwrap();
    let b = back.forward_train(&prompt()).unwrap();
    assert_eq!(common::max_abs_diff(&a, &b), 0.0, "logits differ after the HF round trip");
    let tok2 = Tokenizer::from_hf_folder(&folder).unwrap();
    let text = "Hello <|im_start|>user\nworld";
    assert_eq!(tok.encode(text, false).unwrap(), tok2.encode(text, false).unwrap());
}

#[test]
fn peft_adapter_round_trip_and_merge() {
    let mut model = common::default_llama();
    let spec =
        LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, rslora: false, targets: vec!["q_proj".into(), "down_proj".into()] };
    let set = lora::attach(&mut model, &spec, 7).unwrap();
    // B starts at zero (PEFT's init): perturb it so the adapter changes the output.
    for l in &set.layers {
        let b = l.b().as_tensor();
        l.b().set(&(Tensor::ones_like(b).unwrap() * 0.01).unwrap()).unwrap();
    }
    let adapted = model.forward_train(&prompt()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    graft::io::peft::save_lora(&set, &dir.path().join("adapter"), "smollm2-135m-instruct").unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    let st =
        candle_core::safetensors::load(dir.path().join("adapter/adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert!(st.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert_eq!(st.len(), 2 * 2 * 30);

    let mut fresh = common::default_llama();
    let loaded = graft::io::peft::load_lora(&dir.path().join("adapter"), &mut fresh).unwrap();
    assert_eq!(loaded.layers.len(), 60);
    assert_eq!(common::max_abs_diff(&adapted, &fresh.forward_train(&prompt()).unwrap()), 0.0);

    // Merging gives the same function within f32 rounding.
    lora::merge(&mut fresh).unwrap();
    let merged = fresh.forward_train(&prompt()).unwrap();
    let d = common::max_abs_diff(&adapted, &merged);
    assert!(d < 2e-3, "merged model differs by {d}");

    // A rank mismatch is reported before anything is attached.
    let mut other = common::default_llama();
    let bad = LoraSpec { r: 2, ..spec };
    let set2 = lora::attach(&mut other, &bad, 1).unwrap();
    let p = dir.path().join("r2");
    graft::io::peft::save_lora(&set2, &p, "x").unwrap();
    let mut cfg2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap()).unwrap();
    cfg2["r"] = 4.into();
    std::fs::write(p.join("adapter_config.json"), cfg2.to_string()).unwrap();
    let err = graft::io::peft::load_lora(&p, &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("expected [4, 576]"), "{err}");
}

#[test]
fn lora_targets_that_match_nothing_are_an_error() {
    let mut model = common::default_llama();
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, rslora: false, targets: vec!["qproj".into()] };
    let err = lora::attach(&mut model, &spec, 0).unwrap_err().to_string();
    assert!(err.contains("matched 0 of 210") && err.contains("layers.0.self_attn.q_proj"), "{err}");
    let zero = LoraSpec { r: 0, targets: vec!["q_proj".into()], ..spec };
    assert!(lora::attach(&mut model, &zero, 0).unwrap_err().to_string().contains("adapter.r"));
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mystery.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("mamba".into())).unwrap();
    w.add_tensor(
        "token_embd.weight",
        &Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    w.write(&path).unwrap();
    let err = load_causal_lm(&ModelSource::Gguf(path), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("unknown architecture `mamba`"), "{err}");
}

#[test]
fn nonexistent_model_path_is_a_clear_error() {
    let err = graft::assets::resolve_model("/nonexistent/model.gguf", true).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let model = common::default_llama();
    let n = model.info().max_position_embeddings + 1;
    let ids = Tensor::zeros((1, n), DType::U32, &Device::Cpu).unwrap();
    let err = model.forward_infer(&ids, &mut model.new_cache()).unwrap_err().to_string();
    assert!(err.contains("longer than the model's context"), "{err}");
}
