//! Causal-LM loss helpers.

use crate::Result;
use candle_core::{DType, Tensor, D};

/// Sum of token negative log-likelihoods of `logits` `[n, vocab]` against `targets` `[n]` (u32),
/// computed in at least f32, plus the number of tokens. Summing (not averaging) lets gradient
/// accumulation normalise by the total token count across micro-batches.
pub fn nll_sum(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, usize)> {
    let work = if logits.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(work)?, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?;
    Ok((picked.sum_all()?.neg()?, targets.dim(0)?))
}

/// Mean next-token NLL of `logits` `[1, t, vocab]` for `ids` `[t]`: positions `0..t-1` predict
/// `ids[1..t]` (the Hugging Face shift).
pub fn shifted_mean_nll(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let t = ids.dim(0)?;
    let logits = logits.squeeze(0)?.narrow(0, 0, t - 1)?;
    let targets = ids.narrow(0, 1, t - 1)?;
    let (sum, n) = nll_sum(&logits, &targets)?;
    Ok((sum / n as f64)?)
}
