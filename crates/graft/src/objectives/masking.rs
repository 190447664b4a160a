//! Token masking for masked-language modelling (BERT's recipe).
//!
//! Per sequence, `rate × maskable` positions (stochastically rounded, so the expected count is
//! exact; a batch that draws none gets one) are chosen as targets; special tokens (`[CLS]`, `[SEP]`, `[PAD]`, ...) are never chosen, and
//! padding is never a target because sequences are masked before they are padded. Each target
//! is replaced by `[MASK]` with probability `mask_share`, by a random non-special token with
//! probability `random_share`, and kept otherwise (80 / 10 / 10 by default). With whole-word
//! masking, WordPiece continuation pieces (`##ing`) are chosen together with the piece that
//! starts their word, as in BERT's `create_pretraining_data.py` (a word that would overshoot the
//! budget is skipped).
//!
//! Every draw comes from a ChaCha8 stream fixed by `(seed, micro_step)`, so a resumed run masks
//! each micro-batch exactly as the uninterrupted run did.

use crate::data::{below, uniform};
use crate::{GraftError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Mixed into the seed so the masking streams differ from the data-order streams of the same
/// seed.
const MASKING_SALT: u64 = 0x6d6c_6d5f_6d61_736b;

/// How tokens are chosen and replaced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingSpec {
    /// Share of the maskable (non-special) tokens of each sequence that become targets, in
    /// (0, 1]. Default 0.15.
    pub rate: f64,
    /// Share of targets replaced by `[MASK]`. Default 0.8.
    pub mask_share: f64,
    /// Share of targets replaced by a random non-special token; the rest keep their token.
    /// Default 0.1.
    pub random_share: f64,
    /// Mask WordPiece continuation pieces (`##…`) together with the rest of their word.
    /// Default false.
    pub whole_word: bool,
}

impl Default for MaskingSpec {
    fn default() -> Self {
        Self { rate: 0.15, mask_share: 0.8, random_share: 0.1, whole_word: false }
    }
}

impl MaskingSpec {
    /// Checks the rate lies in (0, 1] and the two shares in [0, 1] with a sum of at most 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(GraftError::Input(format!("mlm: {what}")));
        if !(self.rate > 0.0 && self.rate <= 1.0) {
            return bad(format!("rate must be in (0, 1], found {}", self.rate));
        }
        for (name, v) in [("mask_share", self.mask_share), ("random_share", self.random_share)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1], found {v}"));
            }
        }
        if self.mask_share + self.random_share > 1.0 + 1e-12 {
            return bad(format!(
                "mask_share + random_share must be at most 1, found {} + {}",
                self.mask_share, self.random_share
            ));
        }
        Ok(())
    }
}

/// What the masking needs to know about the vocabulary.
#[derive(Debug, Clone)]
pub struct MaskVocab {
    mask_id: u32,
    /// Per id: never masked (special tokens, and ids past the tokenizer's vocabulary).
    special: Vec<bool>,
    /// Per id: a WordPiece continuation piece (`##…`).
    continuation: Vec<bool>,
    /// Ids a target may be replaced with at random (every non-special id).
    replacements: Vec<u32>,
}

impl MaskVocab {
    /// A vocabulary of `size` ids with `[MASK]` = `mask_id`, the ids `specials` never masked and
    /// `continuations` the WordPiece continuation pieces.
    pub fn new(size: usize, mask_id: u32, specials: &[u32], continuations: &[u32]) -> Result<Self> {
        if mask_id as usize >= size {
            return Err(GraftError::Input(format!("mask id {mask_id} is outside the vocabulary of {size}")));
        }
        let mut special = vec![false; size];
        let mut continuation = vec![false; size];
        for &id in specials.iter().chain([&mask_id]) {
            if let Some(s) = special.get_mut(id as usize) {
                *s = true;
            }
        }
        for &id in continuations {
            if let Some(c) = continuation.get_mut(id as usize) {
                *c = true;
            }
        }
        let replacements: Vec<u32> = (0..size as u32).filter(|&i| !special[i as usize]).collect();
        if replacements.is_empty() {
            return Err(GraftError::Input("the vocabulary has no token that is not special".into()));
        }
        Ok(Self { mask_id, special, continuation, replacements })
    }

    /// The vocabulary of a Hugging Face tokenizer for a model with `model_vocab` embeddings:
    /// `[MASK]` must exist, its special added tokens are never masked, and pieces starting with
    /// `##` are continuations.
    pub fn from_tokenizer(tok: &tokenizers::Tokenizer, model_vocab: usize) -> Result<Self> {
        let mask_id = tok.token_to_id("[MASK]").ok_or_else(|| {
            GraftError::Input("the tokenizer has no `[MASK]` token: masked-language modelling needs one".into())
        })?;
        let specials: Vec<u32> =
            tok.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&i, _)| i).collect();
        let vocab = tok.get_vocab(true);
        let continuations: Vec<u32> = vocab.iter().filter(|(t, _)| t.starts_with("##")).map(|(_, &i)| i).collect();
        // Ids the tokenizer never produces (a model vocabulary padded past the tokenizer's) are
        // neither targets nor random replacements.
        let tokenizer_size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let unused: Vec<u32> = (tokenizer_size.min(model_vocab)..model_vocab).map(|i| i as u32).collect();
        Self::new(model_vocab, mask_id, &[specials, unused].concat(), &continuations)
    }

    /// The `[MASK]` id.
    pub fn mask_id(&self) -> u32 {
        self.mask_id
    }

    /// Whether `id` may be masked (not special, inside the vocabulary).
    pub fn maskable(&self, id: u32) -> bool {
        self.special.get(id as usize).is_some_and(|s| !s)
    }

    fn is_continuation(&self, id: u32) -> bool {
        self.continuation.get(id as usize).copied().unwrap_or(false)
    }
}

/// How a target's input token was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// By `[MASK]`.
    Mask,
    /// By a random non-special token (which may happen to be the original).
    Random,
    /// Not at all.
    Keep,
}

/// One position the model must predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Sequence of the batch.
    pub row: usize,
    /// Position in that sequence.
    pub pos: usize,
    /// The original token: the label.
    pub id: u32,
    /// What the input holds there instead.
    pub replacement: Replacement,
}

/// A masked batch: the corrupted inputs (unpadded) and the targets, by row then position.
#[derive(Debug, Clone, PartialEq)]
pub struct Masked {
    /// Each sequence with its targets replaced.
    pub inputs: Vec<Vec<u32>>,
    /// Every target of the batch.
    pub targets: Vec<Target>,
}

/// Masks `seqs` as `spec` says, drawing from the stream of `(seed, micro_step)`.
pub fn mask_batch(seqs: &[Vec<u32>], vocab: &MaskVocab, spec: &MaskingSpec, seed: u64, micro_step: u64) -> Masked {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ MASKING_SALT);
    rng.set_stream(micro_step);
    let mut inputs = Vec::with_capacity(seqs.len());
    let mut targets = Vec::new();
    for (row, seq) in seqs.iter().enumerate() {
        let mut input = seq.clone();
        for pos in choose_positions(seq, vocab, spec, &mut rng) {
            let replacement = replace(&mut input[pos], vocab, spec, &mut rng);
            targets.push(Target { row, pos, id: seq[pos], replacement });
        }
        inputs.push(input);
    }
    // A batch of short sequences may draw no target at all; it gets one, so every micro-batch
    // has a loss.
    if targets.is_empty() {
        let candidates: Vec<(usize, usize)> = seqs
            .iter()
            .enumerate()
            .flat_map(|(row, s)| {
                s.iter().enumerate().filter(|(_, &id)| vocab.maskable(id)).map(move |(pos, _)| (row, pos))
            })
            .collect();
        if !candidates.is_empty() {
            let (row, pos) = candidates[below(&mut rng, candidates.len() as u64) as usize];
            let replacement = replace(&mut inputs[row][pos], vocab, spec, &mut rng);
            targets.push(Target { row, pos, id: seqs[row][pos], replacement });
        }
    }
    Masked { inputs, targets }
}

/// Replaces the target token `slot`: `[MASK]`, a random non-special token, or kept.
fn replace(slot: &mut u32, vocab: &MaskVocab, spec: &MaskingSpec, rng: &mut ChaCha8Rng) -> Replacement {
    let u = uniform(rng);
    if u < spec.mask_share {
        *slot = vocab.mask_id;
        Replacement::Mask
    } else if u < spec.mask_share + spec.random_share {
        *slot = vocab.replacements[below(rng, vocab.replacements.len() as u64) as usize];
        Replacement::Random
    } else {
        Replacement::Keep
    }
}

/// The target positions of one sequence, ascending.
fn choose_positions(seq: &[u32], vocab: &MaskVocab, spec: &MaskingSpec, rng: &mut ChaCha8Rng) -> Vec<usize> {
    // Units that are chosen whole: single positions, or whole words.
    let mut units: Vec<Vec<usize>> = Vec::new();
    let mut in_word = false;
    for (pos, &id) in seq.iter().enumerate() {
        if !vocab.maskable(id) {
            in_word = false;
            continue;
        }
        match units.last_mut() {
            Some(word) if spec.whole_word && in_word && vocab.is_continuation(id) => word.push(pos),
            _ => units.push(vec![pos]),
        }
        in_word = true;
    }
    let n: usize = units.iter().map(Vec::len).sum();
    if n == 0 {
        return Vec::new();
    }
    // Stochastic rounding: the expected budget is exactly `rate × n`, short sequences included.
    let exact = n as f64 * spec.rate;
    let budget = exact.floor() as usize + usize::from(uniform(rng) < exact.fract());
    for i in (1..units.len()).rev() {
        units.swap(i, below(rng, i as u64 + 1) as usize);
    }
    let mut chosen = Vec::with_capacity(budget);
    for unit in units {
        if chosen.len() >= budget {
            break;
        }
        if chosen.len() + unit.len() <= budget {
            chosen.extend(unit);
        }
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of 1,000 ids: 0 pad, 1 cls, 2 sep, 3 mask special; ids 500.. continuations.
    fn vocab() -> MaskVocab {
        let cont: Vec<u32> = (500..1000).collect();
        MaskVocab::new(1000, 3, &[0, 1, 2], &cont).unwrap()
    }

    /// `[CLS] w… [SEP]` sequences of 5..60 tokens, about `total` tokens in all; words are a start
    /// piece (< 500) followed by 0-2 continuation pieces.
    fn corpus(total: usize, whole_words: bool) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut seqs = Vec::new();
        let mut n = 0;
        while n < total {
            let len = 5 + below(&mut rng, 56) as usize;
            let mut s = vec![1];
            while s.len() < len - 1 {
                s.push(4 + below(&mut rng, 496) as u32);
                if whole_words {
                    for _ in 0..below(&mut rng, 3) {
                        s.push(500 + below(&mut rng, 500) as u32);
                    }
                }
            }
            s.truncate(len - 1);
            s.push(2);
            n += s.len();
            seqs.push(s);
        }
        seqs
    }

    #[test]
    fn rates_over_100k_tokens_and_specials_never_masked() {
        let (v, spec) = (vocab(), MaskingSpec::default());
        let seqs = corpus(108_000, false);
        let (mut maskable, mut targets, mut kinds) = (0usize, 0usize, [0usize; 3]);
        for (step, batch) in seqs.chunks(16).enumerate() {
            let m = mask_batch(batch, &v, &spec, 42, step as u64);
            maskable += batch.iter().flatten().filter(|&&id| v.maskable(id)).count();
            targets += m.targets.len();
            for t in &m.targets {
                let orig = batch[t.row][t.pos];
                assert!(v.maskable(orig), "special token {orig} was made a target");
                assert_eq!(t.id, orig);
                let got = m.inputs[t.row][t.pos];
                match t.replacement {
                    Replacement::Mask => assert_eq!(got, 3),
                    Replacement::Keep => assert_eq!(got, orig),
                    Replacement::Random => assert!(v.maskable(got)),
                }
                kinds[t.replacement as usize] += 1;
            }
            // Outside the targets nothing changed; special tokens stay in place.
            for (row, (inp, orig)) in m.inputs.iter().zip(batch).enumerate() {
                assert_eq!(inp.len(), orig.len());
                for (pos, (a, b)) in inp.iter().zip(orig).enumerate() {
                    if !m.targets.iter().any(|t| t.row == row && t.pos == pos) {
                        assert_eq!(a, b);
                    }
                }
            }
        }
        assert!(maskable >= 100_000, "{maskable}");
        let rate = targets as f64 / maskable as f64;
        let share = |k: usize| kinds[k] as f64 / targets as f64;
        eprintln!("rate {rate:.4}, mask {:.4}, random {:.4}, keep {:.4}", share(0), share(1), share(2));
        assert!((rate - 0.15).abs() < 0.01 * 0.15, "mask rate {rate}");
        assert!((share(0) - 0.8).abs() < 0.01, "[MASK] share {}", share(0));
        assert!((share(1) - 0.1).abs() < 0.01, "random share {}", share(1));
        assert!((share(2) - 0.1).abs() < 0.01, "keep share {}", share(2));
    }

    #[test]
    fn whole_words_are_masked_together() {
        let v = vocab();
        let spec = MaskingSpec { whole_word: true, ..MaskingSpec::default() };
        let seqs = corpus(20_000, true);
        let (mut maskable, mut targets) = (0, 0);
        for (step, batch) in seqs.chunks(8).enumerate() {
            let m = mask_batch(batch, &v, &spec, 1, step as u64);
            maskable += batch.iter().flatten().filter(|&&id| v.maskable(id)).count();
            targets += m.targets.len();
            let is_target = |row: usize, pos: usize| m.targets.iter().any(|t| t.row == row && t.pos == pos);
            for (row, s) in batch.iter().enumerate() {
                for pos in 1..s.len() {
                    // A continuation piece is a target exactly when the piece before it is.
                    if v.is_continuation(s[pos]) && v.maskable(s[pos - 1]) {
                        assert_eq!(is_target(row, pos), is_target(row, pos - 1), "row {row} pos {pos}");
                    }
                }
            }
        }
        let rate = targets as f64 / maskable as f64;
        assert!((rate - 0.15).abs() < 0.01, "whole-word mask rate {rate}");
    }

    #[test]
    fn draws_depend_only_on_seed_and_micro_step() {
        let (v, spec) = (vocab(), MaskingSpec::default());
        let seqs = corpus(2_000, false);
        let a = mask_batch(&seqs, &v, &spec, 5, 7);
        assert_eq!(a, mask_batch(&seqs, &v, &spec, 5, 7));
        assert_ne!(a, mask_batch(&seqs, &v, &spec, 5, 8));
        assert_ne!(a, mask_batch(&seqs, &v, &spec, 6, 7));
    }

    #[test]
    fn only_specials_give_no_target_and_bad_specs_are_refused() {
        let v = vocab();
        let m = mask_batch(&[vec![1, 2], vec![1, 0, 0, 2]], &v, &MaskingSpec::default(), 0, 0);
        assert!(m.targets.is_empty());
        // A batch always has a target when it has a maskable token.
        let m = mask_batch(&[vec![1, 7, 2]], &v, &MaskingSpec::default(), 0, 0);
        assert_eq!(m.targets.len(), 1);
        assert_eq!(m.targets[0].pos, 1);
        for spec in [
            MaskingSpec { rate: 0.0, ..MaskingSpec::default() },
            MaskingSpec { rate: f64::NAN, ..MaskingSpec::default() },
            MaskingSpec { mask_share: 0.95, ..MaskingSpec::default() },
            MaskingSpec { random_share: -0.1, ..MaskingSpec::default() },
        ] {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
        assert!(MaskVocab::new(10, 10, &[], &[]).is_err());
    }
}
