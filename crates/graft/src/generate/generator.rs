//! The KV-cached decoding loop: one forward over the prompt (prefill), then one single-token
//! forward per new token (decode), with the next id chosen by a [`Sampler`].

use super::sampler::{Sampler, SamplingConfig};
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use std::ops::ControlFlow;
use std::time::Instant;

/// What to generate and when to stop, at the level of token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to append after the prompt. Default 128.
    pub max_new_tokens: usize,
    /// EOS ids are masked until this many tokens have been generated (transformers'
    /// `min_new_tokens`). Default 0.
    pub min_new_tokens: usize,
    /// How each token is chosen (greedy by default).
    pub sampling: SamplingConfig,
    /// Seed of the sampler's random generator (same seed, same output). Default 0.
    pub seed: u64,
    /// Ids that end generation (included in the output, as transformers does). Default none.
    pub eos_ids: Vec<u32>,
    /// Ids that may never be generated (transformers' `suppress_tokens`). Default none.
    pub suppress_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            min_new_tokens: 0,
            sampling: SamplingConfig::default(),
            seed: 0,
            eos_ids: Vec::new(),
            suppress_ids: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An EOS id was generated.
    Eos,
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// Prompt plus output filled the model's context.
    ContextFull,
    /// A stop string appeared in the text.
    StopString,
    /// The per-token callback asked to stop for another reason.
    Callback,
}

impl StopReason {
    /// The name used in JSON reports (`eos`, `max_new_tokens`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxNewTokens => "max_new_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::StopString => "stop_string",
            StopReason::Callback => "callback",
        }
    }
}

/// The ids produced by [`generate`] and how long each phase took.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt, as given.
    pub prompt_ids: Vec<u32>,
    /// The generated ids (an EOS id that ended generation is the last one).
    pub new_ids: Vec<u32>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Seconds from the start to the first new token chosen (prompt forward + first sample).
    pub prefill_secs: f64,
    /// Seconds spent producing the tokens after the first (one forward + sample each).
    pub decode_secs: f64,
}

impl Generation {
    /// Prompt tokens processed per second during prefill.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prompt_ids.len(), self.prefill_secs)
    }

    /// New tokens per second after the first (`(new - 1) / decode_secs`); 0 with fewer than two.
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.new_ids.len().saturating_sub(1), self.decode_secs)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if n == 0 || secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

/// The last position's logits of a `[1, vocab]` tensor as f32 values.
fn logits_row(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
}

/// Checks that `prompt_ids` can start a generation with `model`: non-empty, ids inside the
/// vocabulary, and at least one free position left in the context.
pub fn check_prompt(model: &dyn Model, prompt_ids: &[u32]) -> Result<()> {
    let info = model.info();
    if prompt_ids.is_empty() {
        return Err(GraftError::Input("the prompt is empty: generation needs at least one prompt token".into()));
    }
    if let Some(bad) = prompt_ids.iter().find(|&&id| id as usize >= info.vocab_size) {
        return Err(GraftError::Input(format!(
            "prompt token id {bad} is outside the model's vocabulary of {} ids",
            info.vocab_size
        )));
    }
    if prompt_ids.len() >= info.max_position_embeddings {
        return Err(GraftError::Input(format!(
            "the prompt is {} tokens long but the model's context holds {} tokens (prompt and \
             output together): shorten the prompt",
            prompt_ids.len(),
            info.max_position_embeddings
        )));
    }
    Ok(())
}

/// Generates up to `opts.max_new_tokens` ids after `prompt_ids` (batch 1, KV cache).
///
/// `on_token` sees every new id as soon as it is chosen (an ending EOS included) and may end
/// generation early by returning `ControlFlow::Break(reason)`. Works with any [`Model`].
pub fn generate(
    model: &dyn Model,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<ControlFlow<StopReason>>,
) -> Result<Generation> {
    check_prompt(model, prompt_ids)?;
    let mut sampler = Sampler::new(opts.sampling.clone(), opts.seed)?;
    let context_len = model.info().max_position_embeddings;
    let device = model.device();
    let mut out = Generation {
        prompt_ids: prompt_ids.to_vec(),
        new_ids: Vec::with_capacity(opts.max_new_tokens),
        stop_reason: StopReason::MaxNewTokens,
        prefill_secs: 0.0,
        decode_secs: 0.0,
    };
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut context = prompt_ids.to_vec();
    let mut masked = Vec::with_capacity(opts.suppress_ids.len() + opts.eos_ids.len());
    let mut cache = model.new_cache();
    let start = Instant::now();
    let input = Tensor::new(prompt_ids, device)?.unsqueeze(0)?;
    let mut logits = logits_row(&model.forward_infer_last(&input, &mut cache)?)?;
    let mut decode_start = start;
    loop {
        masked.clear();
        masked.extend_from_slice(&opts.suppress_ids);
        if out.new_ids.len() < opts.min_new_tokens {
            masked.extend_from_slice(&opts.eos_ids);
        }
        let id = sampler.sample(&mut logits, &context, &masked)?;
        if out.new_ids.is_empty() {
            out.prefill_secs = start.elapsed().as_secs_f64();
            decode_start = Instant::now();
        }
        out.new_ids.push(id);
        context.push(id);
        if opts.eos_ids.contains(&id) {
            out.stop_reason = StopReason::Eos;
            // The callback still sees the EOS id; its verdict cannot extend generation.
            let _ = on_token(id)?;
            break;
        }
        if let ControlFlow::Break(reason) = on_token(id)? {
            out.stop_reason = reason;
            break;
        }
        if out.new_ids.len() >= opts.max_new_tokens {
            out.stop_reason = StopReason::MaxNewTokens;
            break;
        }
        if context.len() >= context_len {
            out.stop_reason = StopReason::ContextFull;
            break;
        }
        let input = Tensor::new(&[id], device)?.unsqueeze(0)?;
        logits = logits_row(&model.forward_infer_last(&input, &mut cache)?)?;
    }
    out.decode_secs = decode_start.elapsed().as_secs_f64();
    Ok(out)
}
