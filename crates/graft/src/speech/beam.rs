//! Beam search for Whisper, as CTranslate2's `BeamSearch` runs it for `Whisper.generate`
//! (`beam_size` B, `patience` 1, `length_penalty` 1, one hypothesis returned):
//!
//! - the first step expands the prompt's single row; later steps run the B beams through
//!   [`Whisper::decode_step`] as one batch of B, the KV cache rows reordered to follow the
//!   surviving beams ([`crate::models::whisper::WhisperCache::select_rows`]);
//! - at each step the suppressed tokens are masked (as in greedy decoding: `suppress` always,
//!   `suppress_begin` at the first generated position), each row's logits go through a log
//!   softmax and are added to its beam's score, and the best 2·B (beam, token) candidates of
//!   all rows are taken;
//! - of the first B candidates, one ending in end of text (or any, at the last step) becomes a
//!   finished hypothesis (end of text not included) and its place goes to the next candidate
//!   among the spare B that does not end in end of text;
//! - search stops when `round(B · patience)` hypotheses are finished or the length limit is
//!   reached; each finished score (summed log probabilities) is divided by
//!   `length ^ length_penalty` and the best is returned.

use candle_core::Tensor;

use super::decode::{last_rows, GreedyOptions};
use crate::models::whisper::Whisper;
use crate::{GraftError, Result};

/// Settings of beam search beyond those it shares with greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamOptions {
    /// Beams kept at each step (CTranslate2 and faster-whisper default to 5).
    pub beam_size: usize,
    /// Finished hypotheses to collect before stopping, as a multiple of the beam size.
    pub patience: f32,
    /// Exponent of the length each finished score is divided by.
    pub length_penalty: f32,
}

impl BeamOptions {
    /// CTranslate2's `generate` defaults with `beam_size` beams: patience 1, length penalty 1.
    pub fn new(beam_size: usize) -> Self {
        BeamOptions { beam_size, patience: 1.0, length_penalty: 1.0 }
    }
}

/// `log_softmax` of `logits` with the tokens in `masked` (and NaN logits) at −∞.
fn masked_log_softmax(logits: &[f32], masked: &[&[u32]]) -> Vec<f32> {
    let mut out = logits.to_vec();
    for &id in masked.iter().flat_map(|m| m.iter()) {
        if let Some(v) = out.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
    for v in &mut out {
        if v.is_nan() {
            *v = f32::NEG_INFINITY;
        }
    }
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return out;
    }
    let total: f64 = out.iter().map(|&v| f64::from(v - max).exp()).sum();
    let log_total = max + total.ln() as f32;
    out.iter_mut().for_each(|v| *v -= log_total);
    out
}

/// One candidate continuation: the row it extends, its token and the summed log probability.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    row: usize,
    token: u32,
    score: f32,
}

/// The best `n` continuations of the rows (`scores[r]` plus each token's log probability), best
/// first; equal scores in (row, token) order. Tokens at −∞ are never candidates.
fn top_candidates(log_probs: &[Vec<f32>], scores: &[f32], n: usize) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = log_probs
        .iter()
        .zip(scores)
        .enumerate()
        .flat_map(|(row, (lp, &s))| {
            lp.iter().enumerate().filter(|(_, v)| v.is_finite()).map(move |(t, &v)| Candidate {
                row,
                token: t as u32,
                score: s + v,
            })
        })
        .collect();
    let order =
        |a: &Candidate, b: &Candidate| b.score.total_cmp(&a.score).then((a.row, a.token).cmp(&(b.row, b.token)));
    if all.len() > n {
        all.select_nth_unstable_by(n, order);
        all.truncate(n);
    }
    all.sort_by(order);
    all
}

/// A finished hypothesis: its tokens (no end of text) and summed log probability.
type Finished = (Vec<u32>, f32);

/// Beam search of one audio: `audio` the encoder states `[1, frames, d]`, `prompt` the prompt
/// ids, `opts` the length limit and suppression shared with [`super::decode::greedy`]; returns
/// the best hypothesis's ids (without the prompt and the end of text). `beam_size` 1 gives
/// greedy decoding's tokens.
pub fn beam_search(
    model: &Whisper,
    audio: &Tensor,
    prompt: &[u32],
    opts: &GreedyOptions,
    beam: &BeamOptions,
) -> Result<Vec<u32>> {
    if audio.dim(0)? != 1 || prompt.is_empty() || beam.beam_size == 0 {
        return Err(GraftError::Input("beam search takes one audio, a non-empty prompt and at least one beam".into()));
    }
    let b = beam.beam_size;
    let max_candidates = ((b as f32 * beam.patience).round() as usize).max(1);
    // Steps the decoder's positions allow: the prompt fills the first positions, and each step
    // but the last feeds one token.
    let max_steps = opts.max_new_tokens.min(model.dims.text_ctx.saturating_sub(prompt.len()) + 1);
    let mut cache = model.new_cache(audio)?;
    let ids = Tensor::new(prompt, model.device())?.unsqueeze(0)?;
    let mut rows = last_rows(&model.decode_step(&ids, &mut cache)?)?;
    let mut seqs: Vec<Vec<u32>> = vec![Vec::new()];
    let mut scores = vec![0f32];
    let mut finished: Vec<Finished> = Vec::new();
    for step in 0..max_steps {
        let last = step + 1 == max_steps;
        let begin: &[u32] = if step == 0 { &opts.suppress_begin } else { &[] };
        let log_probs: Vec<Vec<f32>> = rows.iter().map(|r| masked_log_softmax(r, &[&opts.suppress, begin])).collect();
        let cands = top_candidates(&log_probs, &scores, 2 * b);
        let mut keep = Vec::with_capacity(b);
        let mut spare = b;
        for k in 0..b.min(cands.len()) {
            let c = cands[k];
            let mut pick = k;
            if c.token == opts.eot || last {
                let mut ids = seqs[c.row].clone();
                if c.token != opts.eot {
                    ids.push(c.token);
                }
                finished.push((ids, c.score));
                if let Some(j) = (spare..cands.len()).find(|&j| cands[j].token != opts.eot) {
                    pick = j;
                    spare = j + 1;
                }
            }
            keep.push(cands[pick]);
        }
        if last || keep.is_empty() || finished.len() >= max_candidates {
            break;
        }
        let origins: Vec<u32> = keep.iter().map(|c| c.row as u32).collect();
        cache.select_rows(&origins)?;
        seqs = keep.iter().map(|c| [seqs[c.row].as_slice(), &[c.token]].concat()).collect();
        scores = keep.iter().map(|c| c.score).collect();
        let tokens: Vec<u32> = keep.iter().map(|c| c.token).collect();
        let ids = Tensor::new(tokens.as_slice(), model.device())?.unsqueeze(1)?;
        rows = last_rows(&model.decode_step(&ids, &mut cache)?)?;
    }
    Ok(best(finished, beam.length_penalty))
}

/// The finished hypothesis with the best score divided by `length ^ length_penalty`; the first
/// of equal ones. Empty when none finished (every token suppressed).
fn best(finished: Vec<Finished>, length_penalty: f32) -> Vec<u32> {
    let normalized = |(ids, s): &Finished| s / (ids.len() as f32).powf(length_penalty);
    let mut best: Option<(f32, Vec<u32>)> = None;
    for f in finished {
        let s = normalized(&f);
        if best.as_ref().is_none_or(|(b, _)| s > *b) {
            best = Some((s, f.0));
        }
    }
    best.map(|(_, ids)| ids).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_masks_and_normalizes() {
        let lp = masked_log_softmax(&[1.0, 2.0, 3.0, f32::NAN], &[&[2]]);
        assert_eq!(lp[2], f32::NEG_INFINITY);
        assert_eq!(lp[3], f32::NEG_INFINITY);
        let total: f32 = lp[..2].iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((lp[1] - lp[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn candidates_are_ranked_over_every_row() {
        let lp = vec![vec![-0.1, -2.0, f32::NEG_INFINITY], vec![-0.5, -0.9, -3.0]];
        let c = top_candidates(&lp, &[-1.0, 0.0], 3);
        let got: Vec<(usize, u32)> = c.iter().map(|c| (c.row, c.token)).collect();
        assert_eq!(got, [(1, 0), (1, 1), (0, 0)]);
        assert!((c[2].score + 1.1).abs() < 1e-6);
        assert_eq!(top_candidates(&lp, &[0.0, 0.0], 10).len(), 5);
    }

    #[test]
    fn the_length_penalty_divides_the_summed_score() {
        let f = vec![(vec![1, 2, 3, 4], -2.0), (vec![5], -0.9)];
        assert_eq!(best(f.clone(), 1.0), [1, 2, 3, 4]);
        assert_eq!(best(f, 0.0), [5]);
        assert!(best(Vec::new(), 1.0).is_empty());
    }
}
