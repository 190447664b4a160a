//! Greedy generation matches transformers token for token (tests/golden/greedy.jsonl).
//!
//! Protocol of the reference: fp32 dense model, KV cache, `do_sample=False`,
//! `max_new_tokens = min_new_tokens = 32` — so EOS (id 2) is masked at every step — and
//! `repetition_penalty = 1`. Tolerance: the 32 new ids identical.

mod common;

use candle_core::{DType, Device};
use graft::generate::{generate, GenerateOptions, StopReason};
use graft::io::gguf::GgufFile;
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use std::ops::ControlFlow;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_new_ids_match_transformers_with_eos_masked() {
    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Dense };
    let model = Llama::from_gguf(&gguf, &opts).unwrap();
    let eos = common::golden_json("model_facts.json")["generation_eos_token_id"].as_u64().unwrap() as u32;
    let cases = common::golden_jsonl("greedy.jsonl");
    assert!(!cases.is_empty());
    for case in cases {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["new_ids"]);
        let gen_opts = GenerateOptions {
            max_new_tokens: want.len(),
            min_new_tokens: want.len(),
            eos_ids: vec![eos],
            ..GenerateOptions::default()
        };
        let mut streamed = Vec::new();
        let g = generate(&model, &prompt, &gen_opts, &mut |id| {
            streamed.push(id);
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(g.new_ids, want, "prompt {:?}", case["prompt"]);
        assert_eq!(streamed, want, "the callback saw every id in order");
        assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
        assert_eq!(g.prompt_ids, prompt);
    }
}
