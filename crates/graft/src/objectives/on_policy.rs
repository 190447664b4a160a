//! On-policy distillation (GKD, Agarwal et al. 2024; TRL's `GKDTrainer`): with probability λ an
//! optimizer step trains on the student's own samples instead of the data's completions. Each
//! row keeps its prompt (the tokens before its first supervised target), the student generates a
//! continuation with the project's sampler and KV cache (`generate::generate`, no gradient), and
//! the row becomes prompt + generated tokens with the generated ones (an ending EOS included)
//! supervised. The teacher then scores those sequences as it scores any batch.
//!
//! Everything random is a pure function of the seed and the run-wide position, so a resumed run
//! repeats it: the step's draw comes from `(seed, step)`, row `r` of micro-batch `i` samples from
//! `(seed, i, r)`.

use crate::data::{make_batches, Batch, Example};
use crate::generate::{generate, stream_seed, GenerateOptions, SamplingConfig};
use crate::models::Model;
use crate::{GraftError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::ControlFlow;

/// Separates the step draws' stream from the rows' sampling streams of the same seed.
const STEP_STREAM: u64 = 0x6f6e_2d70_6f6c_6963;
/// The stream family of the rows' samplers.
const ROW_STREAM: u64 = 0x726f_7773_616d_706c;

/// When and how the student's own samples replace the data's completions.
#[derive(Debug, Clone, PartialEq)]
pub struct OnPolicy {
    /// λ: the probability that an optimizer step is on-policy, in [0, 1].
    pub share: f64,
    /// Most tokens generated per row (fewer where the row would exceed `seq_len`).
    pub max_new_tokens: usize,
    /// How each token is chosen (temperature 0: greedy).
    pub sampling: SamplingConfig,
    /// The run's seed (`train.seed`).
    pub seed: u64,
    /// Micro-batches per optimizer step: every micro-batch of a step shares its draw.
    pub grad_accum: u64,
    /// Longest row of the training data (`data.seq_len`): prompt and sample together stay within
    /// it.
    pub seq_len: usize,
    /// Ids that end a sample (the student's EOS); an ending one is supervised.
    pub eos_ids: Vec<u32>,
    /// Padding id of the rebuilt batches (as the data's).
    pub pad_id: u32,
}

/// A micro-batch rebuilt from the student's samples.
#[derive(Debug, Clone)]
pub struct OnPolicyBatch {
    /// Prompts followed by the samples; only the sampled tokens are supervised.
    pub batch: Batch,
    /// Tokens the student generated over all rows (ending EOS ids included).
    pub generated: usize,
}

impl OnPolicy {
    /// Whether optimizer step `step` (0-based) trains on the student's own samples: a uniform
    /// draw from `(seed, step)` below λ. λ = 0 is never, λ = 1 always.
    pub fn step_is_on_policy(&self, step: u64) -> bool {
        if self.share <= 0.0 {
            return false;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(self.seed ^ STEP_STREAM, step));
        rng.random::<f64>() < self.share
    }

    /// Whether the micro-batch at run-wide index `micro_step` belongs to an on-policy step.
    pub fn micro_step_is_on_policy(&self, micro_step: u64) -> bool {
        self.step_is_on_policy(micro_step / self.grad_accum.max(1))
    }

    /// `batch` with each row's completion replaced by `model`'s sample after the row's prompt
    /// (`micro_step` seeds the rows' samplers). `model` runs through its inference path: the
    /// caller turns dropout off first. A row without a supervised token keeps only its first
    /// token and trains on nothing.
    pub fn rebuild(&self, model: &dyn Model, batch: &Batch, micro_step: u64) -> Result<OnPolicyBatch> {
        let ids = batch.ids.to_vec2::<u32>()?;
        let mask = batch.mask.to_vec2::<f32>()?;
        let row_seeds = stream_seed(self.seed ^ ROW_STREAM, micro_step);
        let mut examples = Vec::with_capacity(ids.len());
        let mut generated = 0;
        for (r, (row, row_mask)) in ids.iter().zip(&mask).enumerate() {
            let Some(first) = row_mask.iter().position(|&m| m > 0.0) else {
                examples.push(Example { ids: row[..1].to_vec(), supervised: vec![false] });
                continue;
            };
            // `mask[i]` flags the target `ids[i + 1]`: the prompt ends with the token the first
            // supervised target is predicted from.
            let prompt = &row[..=first];
            let room = self.seq_len.saturating_sub(prompt.len());
            let opts = GenerateOptions {
                max_new_tokens: self.max_new_tokens.min(room),
                sampling: self.sampling.clone(),
                seed: stream_seed(row_seeds, r as u64),
                eos_ids: self.eos_ids.clone(),
                ..GenerateOptions::default()
            };
            let sample = generate(model, prompt, &opts, &mut |_| Ok(ControlFlow::Continue(())))?;
            generated += sample.new_ids.len();
            let mut supervised = vec![false; prompt.len()];
            supervised.resize(prompt.len() + sample.new_ids.len(), true);
            examples.push(Example { ids: [prompt, &sample.new_ids].concat(), supervised });
        }
        let device = batch.ids.device();
        let mut batches = make_batches(&examples, examples.len().max(1), self.seq_len, false, self.pad_id, device)?;
        let batch = batches.pop().filter(|_| batches.is_empty()).ok_or_else(|| {
            GraftError::Input("internal: an on-policy micro-batch did not rebuild as one batch".into())
        })?;
        Ok(OnPolicyBatch { batch, generated })
    }
}
