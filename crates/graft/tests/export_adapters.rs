//! Adapters on the way out and back in: llama.cpp's LoRA adapter GGUF (layout, q/k row order,
//! scale, refusals), PEFT adapter configs written by other tools, and Ollama Modelfiles for the
//! real SmolLM2 chat template.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use graft::adapters::lora::{self, LoraSet, LoraSpec};
use graft::io::gguf::{GgufFile, GgufWriter};
use graft::io::gguf_lora::{check_gguf_lora, load_gguf_lora, write_gguf_lora};
use graft::io::modelfile::{detect_chat_format, ChatFormat, Modelfile, CHATML_GO_TEMPLATE};
use graft::models::llama::weights::permute_rows_hf_to_gguf;
use graft::models::llama::Llama;
use graft::models::Model;
use graft::tokenizer::{ChatTemplate, Message, Tokenizer};
use std::path::Path;

fn prompt() -> Tensor {
    Tensor::new(&[504u32, 3575, 282, 4649, 314], &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// A LoRA on q, k, o and down projections whose `B` rows all differ (a row permutation of a
/// constant `B` would go unnoticed).
fn adapted_model(rslora: bool) -> (Llama, LoraSet) {
    let mut model = common::default_llama();
    let targets = ["q_proj", "k_proj", "o_proj", "down_proj"].map(String::from).to_vec();
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, rslora, targets };
    let set = lora::attach(&mut model, &spec, 7).unwrap();
    for (i, l) in set.layers.iter().enumerate() {
        let (out, r) = l.b().dims2().unwrap();
        let ramp = Tensor::arange(0u32, (out * r) as u32, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let b = ((ramp * (0.37 + i as f64 * 0.01)).unwrap().sin().unwrap() * 0.02).unwrap().reshape((out, r)).unwrap();
        l.b().set(&b).unwrap();
    }
    (model, set)
}

fn effective(model: &mut Llama, name: &str) -> Tensor {
    model.projections_mut().into_iter().find(|p| p.name() == name).unwrap().effective_weight(DType::F32).unwrap()
}

#[test]
fn gguf_lora_has_llama_cpp_layout_and_round_trips() {
    let (mut model, set) = adapted_model(false);
    let adapted = model.forward_train(&prompt()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.gguf");
    write_gguf_lora(&set, model.config(), "llama", &path, GgmlDType::F32).unwrap();
    check_gguf_lora(&path, &set, "llama").unwrap();

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.meta_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.meta_str("general.type").unwrap(), "adapter");
    assert_eq!(file.meta_str("adapter.type").unwrap(), "lora");
    assert_eq!(file.meta_f32("adapter.lora.alpha").unwrap(), 8.0);
    assert_eq!(file.tensor_names().count(), 2 * 4 * 30);
    // Candle order [r, n_in] / [n_out, r], i.e. ggml ne [n_in, r] / [r, n_out] as llama.cpp checks.
    let dims = |n: &str| file.header().tensor(n).unwrap_or_else(|| panic!("{n} missing")).dims.clone();
    assert_eq!(dims("blk.0.attn_q.weight.lora_a"), [4, 576]);
    assert_eq!(dims("blk.0.attn_q.weight.lora_b"), [576, 4]);
    assert_eq!(dims("blk.29.attn_k.weight.lora_b"), [192, 4]);
    assert_eq!(dims("blk.3.attn_output.weight.lora_a"), [4, 576]);
    assert_eq!(dims("blk.3.ffn_down.weight.lora_a"), [4, 1536]);

    // Applied the way llama.cpp does — on the base GGUF's own (permuted) rows, W + (alpha/r)·B·A
    // with A and B as stored — the adapter gives the merged weight in llama.cpp's row order.
    let base = GgufFile::open(common::default_gguf()).unwrap();
    for (module, gguf, heads) in [
        ("layers.0.self_attn.q_proj", "blk.0.attn_q.weight", 9),
        ("layers.5.self_attn.k_proj", "blk.5.attn_k.weight", 3),
    ] {
        let w = base.dequantize(gguf, DType::F32, &Device::Cpu).unwrap();
        let a = file.dequantize(&format!("{gguf}.lora_a"), DType::F32, &Device::Cpu).unwrap();
        let b = file.dequantize(&format!("{gguf}.lora_b"), DType::F32, &Device::Cpu).unwrap();
        let llama_cpp = (&w + (b.matmul(&a).unwrap() * (8.0 / 4.0)).unwrap()).unwrap();
        let want = permute_rows_hf_to_gguf(&effective(&mut model, module), heads).unwrap();
        let d = common::max_abs_diff(&llama_cpp, &want);
        assert!(d < 1e-5, "{module}: llama.cpp-style application differs by {d}");
        // Control: `B` left in Hugging Face row order would give another weight.
        let layer = set.layers.iter().find(|l| l.name() == module).unwrap();
        let unpermuted = (&w + (layer.b().matmul(layer.a()).unwrap() * 2.0).unwrap()).unwrap();
        let wrong = common::max_abs_diff(&unpermuted, &want);
        assert!(wrong > 1e-4, "{module}: an unpermuted B differs by only {wrong}");
    }

    let mut fresh = common::default_llama();
    let loaded = load_gguf_lora(&path, &mut fresh).unwrap();
    assert_eq!(loaded.layers.len(), 120);
    assert_eq!(loaded.spec.scale(), 2.0);
    let d = common::max_abs_diff(&adapted, &fresh.forward_train(&prompt()).unwrap());
    assert!(d < 1e-5, "f32 GGUF LoRA round trip changed logits by {d}");

    let half = dir.path().join("adapter-f16.gguf");
    write_gguf_lora(&set, model.config(), "llama", &half, GgmlDType::F16).unwrap();
    check_gguf_lora(&half, &set, "llama").unwrap();
    let mut fresh = common::default_llama();
    load_gguf_lora(&half, &mut fresh).unwrap();
    let back = fresh.forward_train(&prompt()).unwrap();
    let d = common::max_abs_diff(&adapted, &back);
    assert!(d < 1e-2, "f16 GGUF LoRA round trip changed logits by {d}");
    assert_eq!(adapted.argmax(2).unwrap().to_vec2::<u32>().unwrap(), back.argmax(2).unwrap().to_vec2::<u32>().unwrap());
    assert!(write_gguf_lora(&set, model.config(), "llama", &half, GgmlDType::Q8_0).is_err());
}

#[test]
fn gguf_lora_keeps_the_rslora_scale() {
    let (model, set) = adapted_model(true);
    assert_eq!(set.spec.scale(), 4.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rs.gguf");
    write_gguf_lora(&set, model.config(), "llama", &path, GgmlDType::F32).unwrap();
    // llama.cpp scales by alpha / r, so alpha = s·r = 16.
    assert_eq!(GgufFile::open(&path).unwrap().meta_f32("adapter.lora.alpha").unwrap(), 16.0);
    let loaded = load_gguf_lora(&path, &mut common::default_llama()).unwrap();
    assert!(loaded.layers.iter().all(|l| l.scale() == 4.0));
}

/// Writes an adapter GGUF with the given metadata and `(name, shape)` tensors.
fn adapter_file(path: &Path, arch: &str, tensors: &[(&str, (usize, usize))]) {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String(arch.into())).unwrap();
    w.add_metadata("general.type", Value::String("adapter".into())).unwrap();
    w.add_metadata("adapter.type", Value::String("lora".into())).unwrap();
    w.add_metadata("adapter.lora.alpha", Value::F32(8.0)).unwrap();
    for (name, shape) in tensors {
        w.add_tensor(name, &Tensor::zeros(*shape, DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
    }
    w.write(path).unwrap();
}

#[test]
fn gguf_lora_that_does_not_fit_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    adapter_file(
        &bad,
        "llama",
        &[
            ("blk.0.attn_q.weight.lora_a", (4, 100)),
            ("blk.0.attn_q.weight.lora_b", (576, 4)),
            ("blk.99.attn_q.weight.lora_a", (4, 576)),
            ("blk.1.attn_v.weight.lora_a", (4, 576)),
        ],
    );
    let err = load_gguf_lora(&bad, &mut common::default_llama()).unwrap_err().to_string();
    for want in [
        "blk.0.attn_q.weight.lora_a`: shape [4, 100], expected [r, 576]",
        "blk.99.attn_q.weight.lora_a` does not adapt",
        "blk.1.attn_v.weight: only one of",
    ] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }

    let other = dir.path().join("gemma.gguf");
    adapter_file(
        &other,
        "gemma3",
        &[("blk.0.attn_q.weight.lora_a", (4, 576)), ("blk.0.attn_q.weight.lora_b", (576, 4))],
    );
    let err = load_gguf_lora(&other, &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("architecture `gemma3`"), "{err}");

    // A model file given as an adapter.
    let err = load_gguf_lora(&common::default_gguf(), &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("not a LoRA adapter GGUF"), "{err}");

    // The written-file check names a missing tensor.
    let (_, set) = adapted_model(false);
    let partial = dir.path().join("partial.gguf");
    adapter_file(&partial, "llama", &[("blk.0.attn_q.weight.lora_a", (4, 576))]);
    let err = check_gguf_lora(&partial, &set, "llama").unwrap_err().to_string();
    assert!(err.contains("tensor `blk.0.attn_q.weight.lora_b` is missing"), "{err}");
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("adapter_config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut cfg);
    std::fs::write(&p, cfg.to_string()).unwrap();
}

#[test]
fn peft_adapters_from_other_tools_load_or_fail_clearly() {
    let (_, set) = adapted_model(false);
    let dir = tempfile::tempdir().unwrap();
    let fresh_copy = |name: &str| {
        let d = dir.path().join(name);
        graft::io::peft::save_lora(&set, &d, "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        d
    };
    // PEFT writes target_modules as one string too (a regex or `all-linear`).
    let one = fresh_copy("string-targets");
    edit_config(&one, |c| c["target_modules"] = "all-linear".into());
    assert_eq!(graft::io::adapter::load_adapter(&one, &mut common::default_llama()).unwrap().layers.len(), 120);

    let foreign = fresh_copy("foreign");
    edit_config(&foreign, |c| c["target_modules"] = serde_json::json!(["query_key_value", "q_proj"]));
    let err = graft::io::adapter::load_adapter(&foreign, &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("query_key_value") && err.contains("another architecture"), "{err}");

    let patterned = fresh_copy("patterned");
    edit_config(&patterned, |c| c["rank_pattern"] = serde_json::json!({ "q_proj": 8 }));
    let err = graft::io::adapter::load_adapter(&patterned, &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("rank_pattern"), "{err}");

    let pickled = fresh_copy("pickled");
    std::fs::rename(pickled.join("adapter_model.safetensors"), pickled.join("adapter_model.bin")).unwrap();
    let err = graft::io::adapter::load_adapter(&pickled, &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("safe_serialization"), "{err}");

    let err = graft::io::adapter::load_adapter(dir.path(), &mut common::default_llama()).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json is missing"), "{err}");
    let err = graft::io::adapter::load_adapter(&dir.path().join("nope"), &mut common::default_llama())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

fn smollm2_tokenizer() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(common::default_gguf()).unwrap()).unwrap()
}

const SMOLLM2_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[test]
fn modelfile_for_smollm2_translates_its_chatml_template() {
    let tok = smollm2_tokenizer();
    let template = tok.chat_template().expect("SmolLM2 ships a chat template");
    assert_eq!(detect_chat_format(&template), ChatFormat::ChatMl { default_system: Some(SMOLLM2_SYSTEM.into()) });

    let text = Modelfile::new("./model.gguf", None, Some(&template), tok.eos_token()).text();
    let want = "# Ollama Modelfile written by `graft export`.
# Create the model with: ollama create NAME -f Modelfile (paths are relative to this file)
FROM ./model.gguf
TEMPLATE \"\"\"{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
\"\"\"
SYSTEM \"\"\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"\"\"
PARAMETER stop \"<|im_end|>\"
PARAMETER stop \"<|im_start|>\"
";
    assert_eq!(text, want);

    let adapter = Modelfile::new(
        "./SmolLM2-135M-Instruct.Q4_1.gguf",
        Some("./adapter.gguf".into()),
        Some(&template),
        tok.eos_token(),
    );
    let text = adapter.text();
    assert!(text.contains("FROM ./SmolLM2-135M-Instruct.Q4_1.gguf\nADAPTER ./adapter.gguf\nTEMPLATE"), "{text}");

    // What Ollama does with the Modelfile — prepend SYSTEM when the conversation has none, then
    // expand the Go template (each message as a turn, then the assistant opener) — gives the
    // text the Jinja template renders.
    let conversation = [Message::user("Hi <b>there</b>"), Message::assistant("Hello."), Message::user("Bye")];
    let ollama: String = std::iter::once(Message::system(SMOLLM2_SYSTEM))
        .chain(conversation.iter().cloned())
        .map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content))
        .chain(std::iter::once("<|im_start|>assistant\n".to_string()))
        .collect();
    assert_eq!(ollama, template.render(&conversation, true).unwrap());
    assert!(CHATML_GO_TEMPLATE.starts_with("{{- range .Messages }}"));
}

#[test]
fn modelfile_for_other_templates_says_why_it_has_no_template() {
    let llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
    let t = ChatTemplate::new(llama3.into(), Some("<|begin_of_text|>".into()), Some("<|eot_id|>".into()));
    let mf = Modelfile::new("./model.gguf", None, Some(&t), Some("<|eot_id|>"));
    let text = mf.text();
    assert!(!text.contains("TEMPLATE \"\"\""), "{text}");
    assert!(text.contains("# No TEMPLATE: graft translates ChatML chat templates only"), "{text}");
    assert_eq!(mf.stops, ["<|eot_id|>"]);

    // Mentions the ChatML tokens but lays turns out differently (no newline after the role).
    let almost = "{% for m in messages %}<|im_start|>{{ m['role'] }}{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let t = ChatTemplate::new(almost.into(), None, Some("<|im_end|>".into()));
    assert!(matches!(detect_chat_format(&t), ChatFormat::Unknown(why) if why.contains("differently")));

    // Plain ChatML without a default system message.
    let plain = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let t = ChatTemplate::new(plain.into(), None, Some("<|endoftext|>".into()));
    assert_eq!(detect_chat_format(&t), ChatFormat::ChatMl { default_system: None });
    let mf = Modelfile::new("./m.gguf", None, Some(&t), Some("<|endoftext|>"));
    assert_eq!(mf.system, None);
    assert_eq!(mf.stops, ["<|endoftext|>", "<|im_end|>", "<|im_start|>"]);

    let none = Modelfile::new("./m.gguf", None, None, Some("</s>")).text();
    assert!(
        none.contains("# No TEMPLATE: the model has no chat template") && none.contains("PARAMETER stop \"</s>\""),
        "{none}"
    );
}
