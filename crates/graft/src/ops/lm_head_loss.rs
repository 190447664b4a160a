//! The LM head and cross-entropy fused and computed in row chunks.
//!
//! A causal-LM loss over `n` tokens and a vocabulary of `V` would otherwise hold `[n × V]`
//! logits, their log-softmax and their gradient at once (for SmolLM2 at 1,024 tokens: 200 MB
//! each in f32). Here the forward computes each chunk's logits, keeps only its per-row negative
//! log-likelihood and, when training, the hidden-state gradient `(softmax − one_hot) W` of its
//! rows (`[n × h]`, small), then drops the logits. A trainable head (full fine-tuning) instead
//! recomputes the logits chunk by chunk in backward for its own gradient. Peak extra memory is a
//! few `[chunk × V]` buffers.

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

/// Per-row NLL of one chunk: `logsumexp(logits) − logits[target]`, times the mask; with
/// `want_dh`, also `∂nll/∂h` of the chunk's rows, `((softmax − one_hot) · mask) W`.
fn chunk_forward(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    work: DType,
    want_dh: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let logits = h.matmul(&w.t()?)?.to_dtype(work)?;
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let lse = (sum.log()? + &max)?;
    let t = targets.unsqueeze(1)?;
    let nll = ((lse - logits.gather(&t, 1)?)?.squeeze(1)? * mask)?;
    let dh = if want_dh {
        let minus_one = Tensor::full(-1f64, t.dims(), e.device())?.to_dtype(work)?;
        let d = e.broadcast_div(&sum)?.scatter_add(&t, &minus_one, 1)?;
        let d = d.broadcast_mul(&mask.unsqueeze(1)?)?.to_dtype(h.dtype())?;
        Some(d.matmul(w)?)
    } else {
        None
    };
    Ok((nll, dh))
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
pub fn lm_head_nll(
    hidden: &Tensor,
    weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (_, inp) = weight.dims();
    if h != inp || targets.dims1()? != n || mask.dims1()? != n {
        candle_core::bail!(
            "lm_head_nll: hidden {:?}, weight {:?}, targets {:?}, mask {:?} do not agree",
            hidden.dims(),
            weight.dims(),
            targets.dims(),
            mask.dims()
        );
    }
    let work = work_dtype(hidden.dtype());
    let mask = mask.to_dtype(work)?.detach();
    let targets = targets.detach();
    let hd = hidden.detach();
    let trainable = match weight {
        FrozenWeight::Dense(w) if w.is_variable() || w.track_op() => Some(w.clone()),
        _ => None,
    };
    // Each row's NLL depends on its own hidden state only, so for a frozen head the gradient
    // is `g_i · ∂nll_i/∂h_i`: computed here from the logits at hand, the backward needs no
    // second pass over the vocabulary. A trainable head needs `g` for its own gradient and
    // recomputes the logits in backward instead.
    let want_dh = trainable.is_none() && hidden.track_op();
    let (value, dh_unit) = {
        let w = weight.dense(hidden.dtype())?.detach();
        let (mut parts, mut dhs) = (Vec::with_capacity(n.div_ceil(LM_HEAD_CHUNK)), Vec::new());
        for start in (0..n).step_by(LM_HEAD_CHUNK) {
            let len = LM_HEAD_CHUNK.min(n - start);
            let (nll, dh) = chunk_forward(
                &hd.narrow(0, start, len)?,
                &w,
                &targets.narrow(0, start, len)?,
                &mask.narrow(0, start, len)?,
                work,
                want_dh,
            )?;
            parts.push(nll);
            dhs.extend(dh);
        }
        (Tensor::cat(&parts, 0)?, if want_dh { Some(Tensor::cat(&dhs, 0)?) } else { None })
    };
    match (trainable, dh_unit) {
        (Some(w), _) => attach2(
            "lm-head-nll",
            hidden,
            &w,
            value,
            Box::new(move |h, w, _, g| {
                let (dh, dw) = grads(h, w, &targets, &mask, g, true)?;
                Ok((Some(dh), dw))
            }),
        ),
        (None, Some(dh_unit)) => attach1(
            "lm-head-nll",
            hidden,
            value,
            Box::new(move |_, _, g| Ok(Some(dh_unit.broadcast_mul(&g.to_dtype(dh_unit.dtype())?.unsqueeze(1)?)?))),
        ),
        // Not differentiated (evaluation): no graph node needed.
        (None, None) => Ok(value),
    }
}
