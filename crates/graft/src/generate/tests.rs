//! The generation loop on a toy model whose next token is known: after id `n` it predicts
//! `n + 1` (logit 10), and EOS gets logit 5, or 20 right after `EOS_AFTER`.

use super::*;
use crate::models::{KvCache, Model, ModelInfo};
use candle_core::{DType, Device, Tensor};
use std::ops::ControlFlow;

const VOCAB: usize = 128;
const EOS: u32 = 3;
const EOS_AFTER: u32 = b'f' as u32;

struct Toy {
    info: ModelInfo,
}

impl Toy {
    fn new(context: usize) -> Self {
        Self {
            info: ModelInfo {
                architecture: "toy".into(),
                vocab_size: VOCAB,
                max_position_embeddings: context,
                n_layers: 1,
            },
        }
    }
}

impl Model for Toy {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
    fn forward_train(&self, ids: &Tensor) -> crate::Result<Tensor> {
        self.forward_infer(ids, &mut self.new_cache())
    }
    fn forward_infer(&self, ids: &Tensor, cache: &mut KvCache) -> crate::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        assert!(cache.len() + t <= self.info.max_position_embeddings, "forward past the context");
        let mut out = Vec::with_capacity(b * t * VOCAB);
        for id in ids.flatten_all()?.to_vec1::<u32>()? {
            let mut row = vec![0f32; VOCAB];
            row[(id as usize + 1) % VOCAB] = 10.0;
            row[EOS as usize] = if id == EOS_AFTER { 20.0 } else { 5.0 };
            out.extend(row);
        }
        cache.advance(t);
        Ok(Tensor::from_vec(out, (b, t, VOCAB), &Device::Cpu)?)
    }
    fn linear_names(&self) -> Vec<String> {
        Vec::new()
    }
}

fn bytes(ids: &[u32]) -> crate::Result<String> {
    Ok(String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<u8>>()).into_owned())
}

fn opts(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens, eos_ids: vec![EOS], ..GenerateOptions::default() }
}

fn run(model: &Toy, prompt: &str, o: &GenerateOptions, stops: &[&str]) -> (TextGeneration, String) {
    let ids: Vec<u32> = prompt.bytes().map(u32::from).collect();
    let stops = StopStrings::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
    let mut streamed = String::new();
    let g = generate_text(model, &bytes, &ids, o, &stops, &mut |s| {
        streamed.push_str(s);
        Ok(())
    })
    .unwrap();
    (g, streamed)
}

#[test]
fn greedy_follows_the_model_and_stops_at_max_new_tokens() {
    let (g, streamed) = run(&Toy::new(64), "a", &opts(4), &[]);
    assert_eq!(g.text, "bcde");
    assert_eq!(streamed, g.text);
    assert_eq!(g.generation.stop_reason, StopReason::MaxNewTokens);
    assert_eq!(g.generation.new_ids.len(), 4);
}

#[test]
fn eos_ends_generation_and_is_kept_in_ids_but_not_text() {
    let (g, _) = run(&Toy::new(64), "a", &opts(20), &[]);
    assert_eq!(g.text, "bcdef");
    assert_eq!(g.generation.new_ids.last(), Some(&EOS));
    assert_eq!(g.generation.stop_reason, StopReason::Eos);
}

#[test]
fn min_new_tokens_masks_eos() {
    let o = GenerateOptions { min_new_tokens: 8, ..opts(8) };
    let (g, _) = run(&Toy::new(64), "a", &o, &[]);
    assert_eq!(g.text, "bcdefghi");
    assert!(!g.generation.new_ids.contains(&EOS));
}

#[test]
fn suppressed_ids_are_never_generated() {
    // Suppressing `d` makes EOS (logit 5) the best choice after `c`.
    let o = GenerateOptions { suppress_ids: vec![u32::from(b'd')], ..opts(10) };
    let (g, _) = run(&Toy::new(64), "a", &o, &[]);
    assert_eq!(g.text, "bc");
    assert_eq!(g.generation.stop_reason, StopReason::Eos);
}

#[test]
fn stop_string_is_trimmed_and_never_streamed() {
    let (g, streamed) = run(&Toy::new(64), "a", &opts(20), &["de"]);
    assert_eq!(g.text, "bc");
    assert_eq!(streamed, "bc");
    assert_eq!(g.generation.stop_reason, StopReason::StopString);
    // Generation stopped on the token that completed the stop string.
    assert_eq!(g.generation.new_ids, vec![u32::from(b'b'), u32::from(b'c'), u32::from(b'd'), u32::from(b'e')]);
}

#[test]
fn held_back_text_is_released_when_the_stop_string_does_not_complete() {
    let (g, streamed) = run(&Toy::new(64), "a", &opts(3), &["dX"]);
    assert_eq!(g.text, "bcd");
    assert_eq!(streamed, "bcd");
    assert_eq!(g.generation.stop_reason, StopReason::MaxNewTokens);
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let (g, _) = run(&Toy::new(4), "ab", &opts(20), &[]);
    assert_eq!(g.text, "cd");
    assert_eq!(g.generation.stop_reason, StopReason::ContextFull);
}

#[test]
fn prompt_that_fills_the_context_is_a_clear_error() {
    let ids = vec![97u32; 4];
    let err = generate(&Toy::new(4), &ids, &opts(5), &mut |_| Ok(ControlFlow::Continue(()))).unwrap_err();
    assert!(err.to_string().contains("context holds 4 tokens"), "{err}");
    let err = generate(&Toy::new(4), &[], &opts(5), &mut |_| Ok(ControlFlow::Continue(()))).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn seeded_sampling_is_reproducible() {
    let o = GenerateOptions {
        sampling: SamplingConfig { temperature: 3.0, ..SamplingConfig::default() },
        seed: 11,
        ..opts(16)
    };
    let a = generate(&Toy::new(64), &[97], &o, &mut |_| Ok(ControlFlow::Continue(()))).unwrap();
    let b = generate(&Toy::new(64), &[97], &o, &mut |_| Ok(ControlFlow::Continue(()))).unwrap();
    assert_eq!(a.new_ids, b.new_ids);
}
