//! A smaller student built from the default model (`model.keep_layers`, every second block: 15
//! of 30): its blocks are the teacher's, renumbered; it exports as a Hugging Face folder and as
//! a GGUF of its own depth (15 blocks, layer names renumbered, lineage recorded) that both
//! reload with identical logits; the GGUF passes the export read-back check; bad choices of
//! blocks are input errors naming the key.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use graft::assets::ModelSource;
use graft::config::TrainConfig;
use graft::io::gguf::GgufFile;
use graft::models::llama::{KeepLayers, Llama, LoadOptions, StudentLineage, WeightFormat};
use graft::models::load::{load_causal_lm, load_causal_lm_keeping};
use graft::models::Model;
use graft::recipes::export::write_gguf;
use graft::recipes::export_check::{check_gguf, logits, CHECK_PROMPT};
use graft::tokenizer::Tokenizer;

fn every_second() -> KeepLayers {
    toml::from_str::<toml::Table>("k = { every = 2 }").unwrap()["k"].clone().try_into().unwrap()
}

fn params(m: &Llama) -> usize {
    m.named_tensors().unwrap().iter().map(|(_, t)| t.elem_count()).sum()
}

#[test]
fn fifteen_of_thirty_blocks_export_and_reload_with_identical_logits() {
    let source = ModelSource::Gguf(common::default_gguf());
    let opts = LoadOptions::default();
    let teacher = load_causal_lm(&source, &opts).unwrap();
    let student = load_causal_lm_keeping(&source, &opts, Some(&every_second())).unwrap();
    let kept: Vec<usize> = (0..30).step_by(2).collect();
    assert_eq!(student.config().num_hidden_layers, 15);
    assert_eq!(student.layers().len(), 15);
    assert_eq!(student.lineage(), Some(&StudentLineage { teacher_num_hidden_layers: 30, kept_layers: kept.clone() }));
    let (tp, sp) = (params(&teacher), params(&student));
    eprintln!("parameters: teacher {tp}, student {sp}");
    // 30 → 15 blocks of 3,540,096 weights each; the embedding (tied LM head) stays.
    assert_eq!(tp - sp, 15 * 3_540_096);

    // Student block i is teacher block kept[i], weight for weight.
    let teacher_w: std::collections::HashMap<String, candle_core::Tensor> =
        teacher.named_tensors().unwrap().into_iter().collect();
    for (name, w) in student.named_tensors().unwrap() {
        let from = match name.strip_prefix("model.layers.").and_then(|r| r.split_once('.')) {
            Some((i, tail)) => format!("model.layers.{}.{tail}", kept[i.parse::<usize>().unwrap()]),
            None => name.clone(),
        };
        assert_eq!(common::max_abs_diff(&w, &teacher_w[&from]), 0.0, "{name} vs {from}");
    }
    drop(teacher_w);

    let base = GgufFile::open(common::default_gguf()).unwrap();
    let ids = Tokenizer::from_gguf(&base).unwrap().encode(CHECK_PROMPT, false).unwrap();
    let want = logits(&student, &ids).unwrap();
    assert!(common::max_abs_diff(&want, &logits(&teacher, &ids).unwrap()) > 0.1, "the student is not the teacher");
    drop(teacher);
    let dir = tempfile::tempdir().unwrap();

    // Hugging Face folder: config.json says 15 blocks and the lineage; layer names are 0..14.
    let hf = dir.path().join("hf");
    let tok = Tokenizer::from_source(&source).unwrap();
    graft::io::hf_folder::write_llama_folder(&student, &tok, &hf, candle_core::DType::F32).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 15);
    assert_eq!(config["graft_student"]["teacher_num_hidden_layers"], 30);
    assert_eq!(config["graft_student"]["kept_layers"], serde_json::json!(kept));
    let names = candle_core::safetensors::load(hf.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let blocks: std::collections::BTreeSet<usize> =
        names.keys().filter_map(|n| n.strip_prefix("model.layers.")?.split_once('.')?.0.parse().ok()).collect();
    assert_eq!(blocks, (0..15).collect());
    let back = load_causal_lm(&ModelSource::HfFolder(hf.clone()), &opts).unwrap();
    let hf_diff = common::max_abs_diff(&want, &logits(&back, &ids).unwrap());
    assert_eq!(back.lineage(), student.lineage());

    // GGUF (f32): block count 15, tensors blk.0..14, the lineage in metadata.
    let gguf_path = dir.path().join("student.gguf");
    write_gguf(&student, &base, &gguf_path, GgmlDType::F32).unwrap();
    let file = GgufFile::open(&gguf_path).unwrap();
    assert_eq!(file.meta_u32("llama.block_count").unwrap(), 15);
    assert!(file.has_tensor("blk.14.attn_q.weight") && !file.has_tensor("blk.15.attn_q.weight"));
    assert!(matches!(file.metadata()[StudentLineage::GGUF_KEPT_BLOCKS], Value::Array(ref a) if a.len() == 15));
    let back = load_causal_lm(&ModelSource::Gguf(gguf_path.clone()), &opts).unwrap();
    let gguf_diff = common::max_abs_diff(&want, &logits(&back, &ids).unwrap());
    assert_eq!(back.lineage(), student.lineage());
    eprintln!("reloaded student, max |Δlogit| over {} positions: HF folder {hf_diff}, GGUF f32 {gguf_diff}", ids.len());
    assert_eq!(hf_diff, 0.0);
    assert_eq!(gguf_diff, 0.0);
    // The export's own read-back check (every tensor, logits) passes for the student.
    check_gguf(&student, &gguf_path, GgmlDType::F32, &ids).unwrap();

    // A student of the exported student still names the first teacher's blocks.
    let keep: KeepLayers = serde_json::from_str("[0, 1, 14]").unwrap();
    let grandchild = load_causal_lm_keeping(&ModelSource::HfFolder(hf.clone()), &opts, Some(&keep)).unwrap();
    assert_eq!(grandchild.lineage().unwrap().kept_layers, vec![0, 2, 28]);

    // A record that does not fit the model is refused, naming the key.
    let mut config = config;
    config["graft_student"]["kept_layers"] = serde_json::json!([0, 2]);
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    let e = load_causal_lm(&ModelSource::HfFolder(hf), &opts).unwrap_err().to_string();
    assert!(e.contains("`graft_student`: names 2 kept blocks, but the model has 15"), "{e}");
}

#[test]
fn a_quantized_student_keeps_its_blocks_quantized() {
    let opts = LoadOptions { format: WeightFormat::Quantized, ..LoadOptions::default() };
    let source = ModelSource::Gguf(common::default_gguf());
    let student = load_causal_lm_keeping(&source, &opts, Some(&every_second())).unwrap();
    assert!(student.has_quantized());
    assert_eq!(student.info().n_layers, 15);
}

#[test]
fn bad_block_choices_are_input_errors_naming_the_key() {
    let source = ModelSource::Gguf(common::default_gguf());
    let keep: KeepLayers = serde_json::from_str("[0, 29, 30]").unwrap();
    let e = load_causal_lm_keeping(&source, &LoadOptions::default(), Some(&keep)).unwrap_err();
    assert_eq!(e.kind(), graft::error::ErrorKind::Input, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("`model.keep_layers`") && msg.contains("block 30 is out of range: the model has 30 blocks"));

    // The config refuses what it can tell without the model.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
    for (value, want) in [
        ("[]", "is empty"),
        ("[2, 2]", "strictly increasing"),
        ("[3, 1]", "strictly increasing"),
        ("{ every = 0 }", "`every` must be at least 1"),
        ("\"every:2\"", "a list of block indices"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[model]\nkeep_layers = {value}\n[data]\ntrain = \"t.jsonl\"\n")).unwrap();
        let msg = TrainConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(msg.contains("keep_layers") && msg.contains(want), "{value}: {msg}");
    }
}
