//! Parity of the Gemma 3 variant of the decoder with transformers on the real Gemma-3-270M GGUF
//! (tests/golden/gemma3/; protocols and tolerances in its README.md): tokenizer, chat template,
//! last-position logits in f32 and f64, top-10 ids at every position, greedy generation with EOS
//! masked, windowed perplexity.
//!
//! Cost on 2 cores: the f32 model (1.1 GB dense) runs the 3 prompts on both paths, 4 × 32 greedy
//! steps and 4 perplexity windows of 513 positions; the f64 model runs the 3 prompts once.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::generate::{generate, GenerateOptions, StopReason};
use graft::io::gguf::GgufFile;
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use graft::models::Model;
use graft::tokenizer::{ChatTemplate, Message, Tokenizer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

fn golden(name: &str) -> Value {
    common::golden_json(&format!("gemma3/{name}"))
}

fn golden_lines(name: &str) -> Vec<Value> {
    common::golden_jsonl(&format!("gemma3/{name}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The Gemma-3-270M GGUF, fetched into the cache if needed.
fn gguf_path() -> PathBuf {
    match graft::assets::resolve_model("gemma3-270m", false).expect("gemma3-270m") {
        graft::assets::ModelSource::Gguf(p) => p,
        other => panic!("gemma3-270m resolved to {other:?}"),
    }
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(&GgufFile::open(gguf_path()).unwrap()).unwrap())
}

fn model(dtype: DType) -> Llama {
    let gguf = GgufFile::open(gguf_path()).unwrap();
    Llama::from_gguf(&gguf, &LoadOptions { device: Device::Cpu, dtype, format: WeightFormat::Dense }).unwrap()
}

fn f32_model() -> &'static Llama {
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| model(DType::F32))
}

#[test]
fn the_file_is_the_reference_file_and_reads_as_gemma3() {
    let facts = golden("model_facts.json");
    let bytes = std::fs::read(gguf_path()).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), facts["gguf_sha256"].as_str().unwrap());
    let cfg = f32_model().config();
    let g = cfg.gemma3().expect("a Gemma 3 config");
    assert_eq!(f32_model().info().architecture, "gemma3");
    assert_eq!(cfg.head_dim(), facts["head_dim"].as_u64().unwrap() as usize);
    assert_eq!(cfg.num_key_value_heads, facts["n_kv_heads"].as_u64().unwrap() as usize);
    assert_eq!(g.sliding_window, facts["sliding_window"].as_u64().unwrap() as usize);
    assert_eq!(cfg.attention_scale(), facts["attention_scale"].as_f64().unwrap());
    assert_eq!(cfg.rms_norm_eps, facts["rms_norm_eps"].as_f64().unwrap());
    let global: Vec<usize> = (0..cfg.num_hidden_layers).filter(|&i| cfg.layer_window(i).is_none()).collect();
    assert_eq!(global, ids(&facts["global_layers"]).iter().map(|&i| i as usize).collect::<Vec<_>>());
    assert_eq!(cfg.layer_rope_theta(0), facts["rope_theta_local"].as_f64().unwrap());
    assert_eq!(cfg.layer_rope_theta(5), facts["rope_theta_global"].as_f64().unwrap());
    // serde_json's float parsing is not exact to the last bit: f32 compared as f32, f64 to 1 ulp.
    let scale = &facts["embedding_scale"];
    let want_f32 = scale["f32_as_used_by_transformers"].as_f64().unwrap() as f32;
    assert_eq!(cfg.embedding_scale(DType::F32).unwrap() as f32, want_f32);
    assert_eq!(cfg.embedding_scale(DType::F32).unwrap(), f64::from(want_f32));
    let (got, want) = (cfg.embedding_scale(DType::F64).unwrap(), scale["f64"].as_f64().unwrap());
    assert!((got - want).abs() <= 4e-15, "{got} vs {want}");
    assert!(cfg.tie_word_embeddings);
}

#[test]
fn tokenize_jsonl_matches_exactly() {
    let tok = tokenizer();
    let cases = golden_lines("tokenize.jsonl");
    assert_eq!(cases.len(), 20);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let (got, tokens) = tok.encode_with_tokens(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "ids of {text:?}");
        let want_tokens: Vec<&str> = case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(tokens, want_tokens, "tokens of {text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), case["decoded"].as_str().unwrap(), "decoded {text:?}");
        if let Some(with) = case.get("ids_add_special_tokens_true") {
            assert_eq!(tok.encode(text, true).unwrap(), ids(with), "ids of {text:?} with BOS");
        }
    }
    let facts = golden("model_facts.json");
    assert_eq!(tok.encode("hi", true).unwrap(), ids(&facts["default_encoding_of_hi"]));
    assert_eq!(tok.bos_id(), Some(facts["bos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id(), Some(facts["eos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.vocab_size(), facts["len_tokenizer"].as_u64().unwrap() as usize);
}

#[test]
fn no_template_in_the_file_and_the_reference_template_renders_exactly() {
    let tok = tokenizer();
    assert!(tok.chat_template().is_none(), "the GGUF has no tokenizer.chat_template");
    let err = graft::data::prompt_ids(tok, &[Message::user("Hi!")]).unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");
    let facts = golden("model_facts.json");
    let reference = &facts["reference_chat_template"];
    let source = reference["text"].as_str().unwrap().to_string();
    assert_eq!(hex::encode(Sha256::digest(source.as_bytes())), reference["sha256"].as_str().unwrap());
    let template = ChatTemplate::new(source, tok.bos_token().map(String::from), tok.eos_token().map(String::from));
    let cases = golden_lines("chat_template.jsonl");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let rendered = template.render(&messages, gen).unwrap();
        assert_eq!(rendered, case["rendered_with_reference_template"].as_str().unwrap(), "{messages:?}");
        assert_eq!(tok.encode(&rendered, false).unwrap(), ids(&case["ids"]), "{messages:?}");
    }
}

struct Prompt {
    ids: Vec<u32>,
    last_f32: Vec<f64>,
    last_f64: Vec<f64>,
    top10: Vec<Vec<i64>>,
    top10_values: Vec<Vec<f32>>,
}

fn prompts() -> Vec<Prompt> {
    let meta = golden("logits.json");
    let path = common::golden_dir().join("gemma3/logits.safetensors");
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let tok = tokenizer();
    meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let k = p["index"].as_u64().unwrap();
            let get = |n: &str| tensors.get(&format!("prompt{k}.{n}")).unwrap().clone();
            let f64_of = |t: Tensor| -> Vec<f64> { t.to_dtype(DType::F64).unwrap().to_vec1().unwrap() };
            let last = get("last_logits");
            let last_f64 = (last.to_dtype(DType::F64).unwrap()
                + get("last_logits_f64_minus_f32").to_dtype(DType::F64).unwrap())
            .unwrap();
            let prompt_ids = ids(&p["ids"]);
            // Plain prompts are tokenized with BOS; the chat prompt's text already holds it.
            let text = p["text"].as_str().unwrap();
            let add_bos = p["kind"].as_str() != Some("chat");
            assert_eq!(tok.encode(text, add_bos).unwrap(), prompt_ids, "ids of prompt {k}");
            Prompt {
                ids: prompt_ids,
                last_f32: f64_of(last),
                last_f64: f64_of(last_f64),
                top10: get("top10_ids").to_vec2().unwrap(),
                top10_values: get("top10_values").to_vec2().unwrap(),
            }
        })
        .collect()
}

/// f32 limits vs the f64 logits: 5e-4 for the short prompts, 1e-3 for the long one (the
/// README's); 1e-3 vs transformers' own f32 logits.
#[test]
fn f32_training_and_inference_paths_match_transformers() {
    let m = f32_model();
    for p in prompts() {
        let limit = if p.ids.len() > 512 { 1e-3 } else { 5e-4 };
        for train in [true, false] {
            let l = common::forward_logits(m, &p.ids, train);
            let row = common::last_row_f64(&l);
            let (d64, d32) = (common::max_abs_diff_f64(&row, &p.last_f64), common::max_abs_diff_f64(&row, &p.last_f32));
            eprintln!("{} tokens, train={train}: max |Δ| vs f64 {d64:e}, vs f32 {d32:e}", p.ids.len());
            assert!(d64 <= limit, "train={train}, {} tokens: max |Δ| vs f64 reference = {d64}", p.ids.len());
            assert!(d32 <= 1e-3, "train={train}, {} tokens: max |Δ| vs f32 reference = {d32}", p.ids.len());
            common::check_top10(&l, &p.top10, &p.top10_values);
        }
    }
}

#[test]
fn f64_matches_true_float64_reference() {
    let m = model(DType::F64);
    for p in prompts() {
        let l = common::forward_logits(&m, &p.ids, false);
        let d = common::max_abs_diff_f64(&common::last_row_f64(&l), &p.last_f64);
        eprintln!("{} tokens, f64: max |Δ| = {d:e}", p.ids.len());
        assert!(d <= 1e-9, "f64 max |Δ| = {d}");
        common::check_top10(&l, &p.top10, &p.top10_values);
    }
}

#[test]
fn greedy_new_ids_match_transformers_with_eos_masked() {
    let model = f32_model();
    let eos = ids(&golden("model_facts.json")["generation_eos_token_ids"]);
    let cases = golden_lines("greedy.jsonl");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let prompt = ids(&case["prompt_ids"]);
        assert_eq!(tokenizer().encode(case["prompt"].as_str().unwrap(), true).unwrap(), prompt);
        let want = ids(&case["new_ids"]);
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            min_new_tokens: want.len(),
            eos_ids: eos.clone(),
            ..GenerateOptions::default()
        };
        let g = generate(model, &prompt, &opts, &mut |_| Ok(ControlFlow::Continue(()))).unwrap();
        assert_eq!(g.new_ids, want, "prompt {:?}", case["prompt"]);
        assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
        assert_eq!(tokenizer().decode(&g.new_ids, false).unwrap(), case["text"].as_str().unwrap());
    }
}

/// All 4 windows of the reference text, each scored as `[BOS] + 512 tokens` (so the sliding
/// layers' last positions no longer see BOS): mean NLL within relative 5e-5 of the float64 value.
#[test]
fn perplexity_of_the_reference_text_matches_float64_reference() {
    let reference = golden("perplexity.json");
    let path = reference["file"].as_str().unwrap();
    let bytes = std::fs::read(path);
    if !common::require(bytes.is_ok(), format!("{path} is not on this machine (Debian's base-files has it)")) {
        return;
    }
    let bytes = bytes.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), reference["file_sha256"].as_str().unwrap(), "{path} differs");
    let text = String::from_utf8(bytes).unwrap();
    let tok = tokenizer();
    let text_ids = tok.encode(&text, false).unwrap();
    assert_eq!(text_ids.len() as u64, reference["n_tokens"].as_u64().unwrap());
    assert_eq!(text_ids[..16], ids(&reference["first_16_ids"])[..]);
    let window = reference["window"].as_u64().unwrap() as usize;
    assert!(tok.adds_bos());
    let p = graft::eval::perplexity_with_bos(f32_model(), &text_ids, window, tok.bos_id(), &mut |_, _| {}).unwrap();
    assert_eq!(p.n_windows as u64, reference["n_windows"].as_u64().unwrap());
    assert_eq!(p.n_predicted as u64, reference["fp64"]["n_predicted"].as_u64().unwrap());
    let want = reference["fp64"]["mean_nll"].as_f64().unwrap();
    let rel = (p.mean_nll - want).abs() / want;
    eprintln!("mean NLL {} vs fp64 {want}: rel {rel:e}; ppl {}", p.mean_nll, p.ppl);
    assert!(rel <= 5e-5, "mean_nll {} vs fp64 {want}: rel {rel:e}", p.mean_nll);
}

/// The Hugging Face folder and GGUF writers know the Llama layout only: for Gemma 3 they refuse,
/// naming the model, and write nothing.
#[test]
fn exports_that_would_write_a_llama_layout_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("merged");
    let err = graft::io::hf_folder::write_llama_folder(f32_model(), tokenizer(), &folder, DType::F32).unwrap_err();
    assert!(err.to_string().contains("Gemma 3"), "{err}");
    assert!(!folder.exists());
    let out = dir.path().join("model.gguf");
    let base = GgufFile::open(gguf_path()).unwrap();
    let err = graft::recipes::export::write_gguf(f32_model(), &base, &out, candle_core::quantized::GgmlDType::F16)
        .unwrap_err();
    assert!(err.to_string().contains("Gemma 3"), "{err}");
    assert!(!out.exists());
}

/// Quantized projections (candle's Q5_0 / Q4_K / Q6_K / Q8_0 kernels, activations rounded to
/// Q8) compute nearly the same function as the exact dense weights: the next-token logits of
/// every greedy prompt stay close and the argmax is the reference's first new token.
#[test]
fn quantized_weights_give_close_logits_and_the_same_first_token() {
    let gguf = GgufFile::open(gguf_path()).unwrap();
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Quantized };
    let quant = Llama::from_gguf(&gguf, &opts).unwrap();
    assert!(quant.has_quantized());
    for case in golden_lines("greedy.jsonl") {
        let prompt = ids(&case["prompt_ids"]);
        let x = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let row = |m: &Llama| -> Vec<f32> {
            m.forward_infer_last(&x, &mut m.new_cache()).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
        };
        let (d, q) = (row(f32_model()), row(&quant));
        let diff = d.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{:?}: max |dense - quantized| = {diff}", case["prompt"]);
        assert!(diff <= 3.0, "max |dense - quantized| = {diff}");
        assert_eq!(graft::generate::sampler::argmax(&q).unwrap(), ids(&case["new_ids"])[0], "{:?}", case["prompt"]);
    }
}

/// Gemma 3 hyperparameters go through the same checks as the Llama ones, and errors name the
/// key as the file spells it.
#[test]
fn gemma3_hyperparameters_are_validated_by_their_gguf_keys() {
    use graft::models::llama::config::KeyNames;
    use graft::models::llama::{Family, LlamaConfig};
    let cfg = LlamaConfig::from_gguf(&GgufFile::open(gguf_path()).unwrap()).unwrap();
    let names = KeyNames::Gguf { arch: "gemma3".into() };
    let Family::Gemma3(params) = cfg.family else { panic!("not read as Gemma 3: {:?}", cfg.family) };
    let mut bad = cfg.clone();
    bad.family = Family::Gemma3(graft::models::llama::Gemma3Params { sliding_window: 0, ..params });
    let err = bad.validate_as(&names).unwrap_err().to_string();
    assert!(err.contains("`gemma3.attention.sliding_window`: found 0"), "{err}");
    let mut bad = cfg.clone();
    bad.head_dim = Some(255);
    let err = bad.validate_as(&names).unwrap_err().to_string();
    assert!(err.contains("`gemma3.attention.key_length`") && err.contains("even"), "{err}");
}

#[test]
fn a_student_of_gemma3_is_refused_before_weights_are_read() {
    use graft::models::llama::KeepLayers;
    let source = graft::assets::ModelSource::Gguf(gguf_path());
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Dense };
    let keep = KeepLayers::List(vec![0, 2, 4]);
    let err = graft::models::load::load_causal_lm_keeping(&source, &opts, Some(&keep)).unwrap_err().to_string();
    assert!(err.contains("model.keep_layers") && err.contains("Gemma 3"), "{err}");
}

#[test]
fn growing_gemma3_is_refused_before_weights_are_read() {
    let source = graft::assets::ModelSource::Gguf(gguf_path());
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Dense };
    let err = graft::models::load::load_causal_lm_expanding(&source, &opts, 2).unwrap_err();
    assert_eq!(err.kind(), graft::error::ErrorKind::Input, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`model.expand_blocks`") && msg.contains("Gemma 3"), "{msg}");
}
