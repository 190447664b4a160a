//! The LM head and cross-entropy fused and computed in row chunks.
//!
//! A causal-LM loss over `n` tokens and a vocabulary of `V` would otherwise hold `[n × V]`
//! logits, their log-softmax and their gradient at once (for SmolLM2 at 1,024 tokens: 200 MB
//! each in f32). Here the forward computes each chunk's logits, keeps only its per-row negative
//! log-likelihood and drops the logits; the backward recomputes them chunk by chunk and turns
//! `softmax − one_hot` straight into the hidden-state gradient (and the head weight's, when it
//! trains). Peak extra memory is a few `[chunk × V]` buffers; the price is one more head matmul.

use super::attach::{attach1, attach2};
use super::frozen_linear::FrozenWeight;
use candle_core::{DType, Tensor, D};

/// Rows of hidden states turned into logits at once.
pub const LM_HEAD_CHUNK: usize = 128;

/// The dtype losses are accumulated in.
fn work_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Per-row NLL of one chunk: `logsumexp(logits) − logits[target]`, times the mask.
fn chunk_nll(h: &Tensor, w: &Tensor, targets: &Tensor, mask: &Tensor, work: DType) -> candle_core::Result<Tensor> {
    let logits = h.matmul(&w.t()?)?.to_dtype(work)?;
    let max = logits.max_keepdim(D::Minus1)?;
    let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.squeeze(1)? * mask
}

/// `(dh, dw)` for output gradient `g [n]`: per chunk `d logits = (softmax − one_hot) · g · mask`.
fn grads(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    g: &Tensor,
    want_w: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let n = hidden.dim(0)?;
    let work = work_dtype(hidden.dtype());
    let coef = (g.to_dtype(work)? * mask)?;
    let mut dh = Vec::with_capacity(n.div_ceil(LM_HEAD_CHUNK));
    let mut dw: Option<Tensor> = None;
    for start in (0..n).step_by(LM_HEAD_CHUNK) {
        let len = LM_HEAD_CHUNK.min(n - start);
        let h = hidden.narrow(0, start, len)?;
        let t = targets.narrow(0, start, len)?.unsqueeze(1)?;
        let logits = h.matmul(&w.t()?)?.to_dtype(work)?;
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        let minus_one = Tensor::full(-1f64, (len, 1), p.device())?.to_dtype(work)?;
        let d = p.scatter_add(&t, &minus_one, 1)?;
        let d = d.broadcast_mul(&coef.narrow(0, start, len)?.unsqueeze(1)?)?.to_dtype(hidden.dtype())?;
        dh.push(d.matmul(w)?);
        if want_w {
            let part = d.t()?.matmul(&h)?;
            dw = Some(match dw {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
    }
    Ok((Tensor::cat(&dh, 0)?, dw))
}

/// Per-row negative log-likelihood `[n]` (f32, or f64 for f64 inputs) of the logits
/// `hidden [n, h] · Wᵀ` against `targets [n]` (u32), multiplied by `mask [n]` (1 = counts).
///
/// A dense `weight` that is a trainable variable (full fine-tuning with tied embeddings) also
/// receives its gradient; a frozen or quantized one does not.
pub fn lm_head_nll(hidden: &Tensor, weight: &FrozenWeight, targets: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (_, inp) = weight.dims();
    if h != inp || targets.dims1()? != n || mask.dims1()? != n {
        candle_core::bail!("lm_head_nll: hidden {:?}, weight {:?}, targets {:?}, mask {:?} do not agree",
            hidden.dims(), weight.dims(), targets.dims(), mask.dims());
    }
    let work = work_dtype(hidden.dtype());
    let mask = mask.to_dtype(work)?.detach();
    let targets = targets.detach();
    let hd = hidden.detach();
    let trainable = match weight {
        FrozenWeight::Dense(w) if w.is_variable() || w.track_op() => Some(w.clone()),
        _ => None,
    };
    let value = {
        let w = weight.dense(hidden.dtype())?.detach();
        let mut parts = Vec::with_capacity(n.div_ceil(LM_HEAD_CHUNK));
        for start in (0..n).step_by(LM_HEAD_CHUNK) {
            let len = LM_HEAD_CHUNK.min(n - start);
            parts.push(chunk_nll(&hd.narrow(0, start, len)?, &w, &targets.narrow(0, start, len)?, &mask.narrow(0, start, len)?, work)?);
        }
        Tensor::cat(&parts, 0)?
    };
    match trainable {
        Some(w) => attach2(
            "lm-head-nll",
            hidden,
            &w,
            value,
            Box::new(move |h, w, _, g| {
                let (dh, dw) = grads(h, w, &targets, &mask, g, true)?;
                Ok((Some(dh), dw))
            }),
        ),
        None => {
            let weight = weight.clone();
            attach1(
                "lm-head-nll",
                hidden,
                value,
                Box::new(move |h, _, g| {
                    let w = weight.dense(h.dtype())?;
                    Ok(Some(grads(h, &w, &targets, &mask, g, false)?.0))
                }),
            )
        }
    }
}
