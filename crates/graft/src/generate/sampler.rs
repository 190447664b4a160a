//! Choosing the next token from a row of logits, the way transformers' `generate` does.
//!
//! The logits pass through the processors in transformers' order — repetition penalty, token
//! masks (EOS before `min_new_tokens`, suppressed ids), then, only when sampling, temperature,
//! top-k and top-p — and the result is either its argmax (greedy, `temperature == 0`) or a draw
//! from its softmax with a seeded ChaCha generator (reproducible for a given seed).

use crate::{GraftError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; `0` means greedy (argmax). Default 0.
    pub temperature: f32,
    /// Keep only the `k` highest logits before sampling (ties with the k-th are kept, as in
    /// transformers); `0` disables. Default 0.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1.0`
    /// disables. Default 1.0.
    pub top_p: f32,
    /// Penalty for ids already in the prompt or output: positive logits are divided by it,
    /// negative ones multiplied (transformers' `repetition_penalty`); `1.0` disables. Default 1.0.
    pub repetition_penalty: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
    }
}

impl SamplingConfig {
    /// Whether the next token is the argmax (no randomness involved).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field is in its valid range; the message names the flag to fix.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(GraftError::Input(format!(
                "temperature must be a finite number >= 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GraftError::Input(format!("top-p must be in (0, 1], got {}", self.top_p)));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(GraftError::Input(format!(
                "repetition penalty must be a finite number > 0 (1 = off), got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// Divides positive logits of every id in `context` by `penalty` and multiplies negative ones
/// (each id once, however often it occurs), as transformers' `RepetitionPenaltyLogitsProcessor`.
pub fn apply_repetition_penalty(logits: &mut [f32], context: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &id in context {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let l = logits[i];
            logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
}

/// Sets the logits of `ids` to −∞ so they can never be chosen.
pub fn mask_tokens(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Divides every logit by `temperature` (transformers' `TemperatureLogitsWarper`).
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        logits.iter_mut().for_each(|l| *l /= temperature);
    }
}

/// Sets to −∞ every logit below the `k`-th largest (ties with it survive), as transformers'
/// `TopKLogitsWarper`; `k == 0` or `k >= len` keeps everything.
pub fn apply_top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    // Descending; the k-th largest value ends at index k-1.
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    logits.iter_mut().filter(|l| **l < threshold).for_each(|l| *l = f32::NEG_INFINITY);
}

/// Nucleus filtering as transformers' `TopPLogitsWarper`: sort ascending, take the cumulative
/// softmax, drop tokens whose cumulative probability is `<= 1 - top_p`, always keep the most
/// likely one. `top_p >= 1` keeps everything.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    if top_p >= 1.0 {
        return;
    }
    let probs = softmax(logits);
    // Tokens already at −∞ have probability 0 and stay removed; sorting only the rest is cheaper.
    let mut order: Vec<usize> = (0..logits.len()).filter(|&i| logits[i] > f32::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)));
    let Some((_, rest)) = order.split_last() else { return };
    let cut = 1.0 - f64::from(top_p);
    let mut cumulative = 0.0f64;
    for &i in rest {
        cumulative += probs[i];
        if cumulative <= cut {
            logits[i] = f32::NEG_INFINITY;
        } else {
            break;
        }
    }
}

/// Softmax of `logits` computed in f64 (−∞ gives probability 0).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    let max = f64::from(max);
    let mut out: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - max).exp()).collect();
    let sum: f64 = out.iter().sum();
    out.iter_mut().for_each(|p| *p /= sum);
    out
}

/// Index of the largest logit (the first one on ties, like `torch.argmax`).
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// A seed for the `index`-th independent random stream of `seed`: a SplitMix64 mix of the two,
/// so each stream (a record's answer, a row's sample) depends only on `(seed, index)` and not on
/// how many streams were drawn before it.
pub fn stream_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Chooses next tokens: the processors of a [`SamplingConfig`] plus a seeded random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose random draws are fixed by `seed` (irrelevant when greedy).
    pub fn new(config: SamplingConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Applies every processor in transformers' order, in place: repetition penalty over
    /// `context` (prompt + generated ids), −∞ on `masked` ids, then, unless greedy, temperature,
    /// top-k and top-p.
    pub fn process(&self, logits: &mut [f32], context: &[u32], masked: &[u32]) {
        let c = &self.config;
        apply_repetition_penalty(logits, context, c.repetition_penalty);
        mask_tokens(logits, masked);
        if !c.is_greedy() {
            apply_temperature(logits, c.temperature);
            apply_top_k(logits, c.top_k);
            apply_top_p(logits, c.top_p);
        }
    }

    /// Picks the next id from `logits` (consumed as scratch space) given the ids seen so far and
    /// the ids that must not be chosen now.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32], masked: &[u32]) -> Result<u32> {
        self.process(logits, context, masked);
        let none_left = || GraftError::Input("every token was masked: nothing can be generated".into());
        if self.config.is_greedy() {
            return match argmax(logits) {
                Some(id) if logits[id as usize] > f32::NEG_INFINITY => Ok(id),
                _ => Err(none_left()),
            };
        }
        let probs = softmax(logits);
        let total: f64 = probs.iter().sum();
        // NaN logits give a NaN total: refuse that as well as an all-zero distribution.
        if total.is_nan() || total <= 0.0 {
            return Err(none_left());
        }
        let u: f64 = self.rng.random::<f64>() * total;
        let mut cumulative = 0.0;
        let mut last_valid = None;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cumulative += p;
                last_valid = Some(i);
                if u < cumulative {
                    return Ok(i as u32);
                }
            }
        }
        // Rounding can leave `u` just above the running sum: the last possible token wins.
        last_valid.map(|i| i as u32).ok_or_else(none_left)
    }
}
