//! Perplexity over consecutive, non-overlapping windows.
//!
//! Protocol (the one of the reference values in `tests/golden/perplexity.json`): the token ids
//! of a whole text are cut into windows of `w` tokens, the last partial window is dropped, each
//! window is scored alone from position 0, and the loss is the mean negative log-likelihood of
//! tokens `1..w` of every window given the ones before it:
//! `mean_nll = Σ −log p(x_i | x_<i) / ((w − 1) · n_windows)`, `ppl = exp(mean_nll)`.
//! For models whose tokenizer adds BOS to every text (Gemma), [`perplexity_with_bos`] scores each
//! window as `[BOS] + window`, so all `w` tokens are predicted (the protocol of
//! `tests/golden/gemma3/perplexity.json`).
//! The log-softmax runs in f64 on the (widened) logits, whatever the model's dtype.

use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Perplexity {
    /// Tokens in the whole text.
    pub n_tokens: usize,
    /// Tokens per window.
    pub window: usize,
    /// Windows scored (the partial last one is dropped).
    pub n_windows: usize,
    /// Tokens whose likelihood was scored: `(window − 1) · n_windows`, or `window · n_windows`
    /// with a BOS in front of every window.
    pub n_predicted: usize,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub ppl: f64,
}

/// Sum over positions `0..t-1` of `−log softmax(logits[i])[targets[i]]`, computed in f64.
///
/// `logits` is `[t, vocab]` (any float dtype) and `targets` has `t` ids; every row is scored.
pub fn sum_nll(logits: &Tensor, targets: &[u32]) -> Result<f64> {
    let (t, vocab) = logits.dims2()?;
    if t != targets.len() {
        return Err(GraftError::Input(format!("{t} rows of logits for {} targets", targets.len())));
    }
    let rows: Vec<f64> = match logits.dtype() {
        DType::F64 => logits.flatten_all()?.to_vec1()?,
        _ => logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect(),
    };
    let mut total = 0.0;
    for (row, &target) in rows.chunks_exact(vocab).zip(targets) {
        let target = target as usize;
        if target >= vocab {
            return Err(GraftError::Input(format!("target id {target} is outside the vocabulary of {vocab}")));
        }
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
        total += lse - row[target];
    }
    Ok(total)
}

/// Perplexity of `ids` under `model` with windows of `window` tokens (see the module docs).
///
/// `on_window(done, total)` is called after each window (for progress reports). Fails when
/// `ids` is shorter than one window or a window does not fit the model's context.
pub fn perplexity(
    model: &dyn Model,
    ids: &[u32],
    window: usize,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    perplexity_with_bos(model, ids, window, None, on_window)
}

/// [`perplexity`], with `bos` (when given) in front of every window: the model then reads
/// `[bos] + window[..w-1]` and every one of the `w` window tokens is scored, as for a model whose
/// tokenizer adds BOS to each text it scores.
pub fn perplexity_with_bos(
    model: &dyn Model,
    ids: &[u32],
    window: usize,
    bos: Option<u32>,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    if window < 2 {
        return Err(GraftError::Input(format!("window must be at least 2 tokens, got {window}")));
    }
    let context = model.info().max_position_embeddings;
    if window > context {
        return Err(GraftError::Input(format!(
            "window of {window} tokens is longer than the model's context of {context}: use --window {context} or less"
        )));
    }
    let n_windows = ids.len() / window;
    if n_windows == 0 {
        return Err(GraftError::Input(format!(
            "the text has {} tokens, fewer than one window of {window}: use a longer text or a smaller --window",
            ids.len()
        )));
    }
    let mut total = 0.0;
    for w in 0..n_windows {
        let chunk = &ids[w * window..(w + 1) * window];
        let (input, targets): (Vec<u32>, &[u32]) = match bos {
            Some(b) => (std::iter::once(b).chain(chunk[..window - 1].iter().copied()).collect(), chunk),
            None => (chunk.to_vec(), &chunk[1..]),
        };
        let input = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
        let logits = model.forward_infer(&input, &mut model.new_cache())?.squeeze(0)?;
        total += sum_nll(&logits.narrow(0, 0, targets.len())?, targets)?;
        on_window(w + 1, n_windows);
    }
    let n_predicted = if bos.is_some() { window } else { window - 1 } * n_windows;
    let mean_nll = total / n_predicted as f64;
    Ok(Perplexity { n_tokens: ids.len(), window, n_windows, n_predicted, mean_nll, ppl: mean_nll.exp() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let logits = Tensor::zeros((3, 8), DType::F32, &Device::Cpu).unwrap();
        let nll = sum_nll(&logits, &[0, 3, 7]).unwrap();
        assert!((nll - 3.0 * 8f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn nll_matches_hand_computed_log_softmax() {
        // Row [0, ln 3]: p = [1/4, 3/4]; targets 1 then 0 → −ln(3/4) − ln(1/4).
        let logits = Tensor::new(&[[0f64, 3f64.ln()], [0.0, 3f64.ln()]], &Device::Cpu).unwrap();
        let nll = sum_nll(&logits, &[1, 0]).unwrap();
        let want = -(0.75f64.ln()) - 0.25f64.ln();
        assert!((nll - want).abs() < 1e-12, "{nll} vs {want}");
    }

    fn tiny_model() -> crate::models::llama::Llama {
        use crate::models::llama::random::{smollm2_135m_config, RandomWeights};
        use crate::models::llama::{Llama, LlamaConfig, LoadOptions};
        let cfg = LlamaConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: Some(8),
            max_position_embeddings: 16,
            ..smollm2_135m_config()
        };
        Llama::load(cfg.clone(), &RandomWeights::new(cfg, 5), &LoadOptions::default()).unwrap()
    }

    #[test]
    fn windows_are_scored_alone_and_the_partial_one_is_dropped() {
        let model = tiny_model();
        let ids: Vec<u32> = (0..13).map(|i| (i * 7 % 50) as u32).collect();
        let p = perplexity(&model, &ids, 5, &mut |_, _| {}).unwrap();
        assert_eq!((p.n_windows, p.n_predicted, p.n_tokens), (2, 8, 13));
        // The same numbers from the training path, one window at a time.
        let mut total = 0.0;
        for w in ids.chunks_exact(5) {
            let x = Tensor::new(w, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let logits = model.forward_train(&x).unwrap().squeeze(0).unwrap();
            total += sum_nll(&logits.narrow(0, 0, 4).unwrap(), &w[1..]).unwrap();
        }
        assert!((p.mean_nll - total / 8.0).abs() < 1e-5, "{} vs {}", p.mean_nll, total / 8.0);
    }

    #[test]
    fn short_text_and_oversized_window_are_clear_errors() {
        let model = tiny_model();
        let err = perplexity(&model, &[1, 2, 3], 5, &mut |_, _| {}).unwrap_err().to_string();
        assert!(err.contains("3 tokens, fewer than one window of 5"), "{err}");
        let err = perplexity(&model, &[1; 40], 32, &mut |_, _| {}).unwrap_err().to_string();
        assert!(err.contains("context of 16"), "{err}");
    }

    #[test]
    fn target_outside_vocabulary_is_an_error() {
        let logits = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(sum_nll(&logits, &[4]).is_err());
    }
}
