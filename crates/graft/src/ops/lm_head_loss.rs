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
pub(super) fn work_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Per-row NLL of one chunk of logits `[len, V]` (already in the work dtype):
/// `logsumexp(logits) − logits[target]`, times the mask; with `want_d`, also its gradient with
/// respect to the logits, `(softmax − one_hot) · mask` (work dtype).
pub(super) fn ce_rows(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    want_d: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let lse = (sum.log()? + &max)?;
    let t = targets.unsqueeze(1)?;
    let nll = ((lse - logits.gather(&t, 1)?)?.squeeze(1)? * mask)?;
    let d = if want_d {
        let minus_one = Tensor::full(-1f64, t.dims(), e.device())?.to_dtype(logits.dtype())?;
        let d = e.broadcast_div(&sum)?.scatter_add(&t, &minus_one, 1)?;
        Some(d.broadcast_mul(&mask.unsqueeze(1)?)?)
    } else {
        None
    };
    Ok((nll, d))
}

/// The cross-entropy gradient with respect to one chunk of logits `[len, V]` (work dtype) in
/// backward: `(softmax − one_hot) · coef`, `coef [len]` being the output gradient times the mask.
pub(super) fn ce_dlogits(logits: &Tensor, targets: &Tensor, coef: &Tensor) -> candle_core::Result<Tensor> {
    let t = targets.unsqueeze(1)?;
    let p = candle_nn::ops::softmax_last_dim(logits)?;
    let minus_one = Tensor::full(-1f64, t.dims(), p.device())?.to_dtype(logits.dtype())?;
    p.scatter_add(&t, &minus_one, 1)?.broadcast_mul(&coef.unsqueeze(1)?)
}

/// Per-row NLL of one chunk and, with `want_dh`, `∂nll/∂h` of the chunk's rows,
/// `((softmax − one_hot) · mask) W`.
fn chunk_forward(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    work: DType,
    want_dh: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let logits = h.matmul(&w.t()?)?.to_dtype(work)?;
    let (nll, d) = ce_rows(&logits, targets, mask, want_dh)?;
    let dh = d.map(|d| d.to_dtype(h.dtype())?.matmul(w)).transpose()?;
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
    let coef = (g.to_dtype(work_dtype(hidden.dtype()))? * mask)?;
    head_grads(hidden, w, want_w, |start, len, logits| {
        ce_dlogits(logits, &targets.narrow(0, start, len)?, &coef.narrow(0, start, len)?)
    })
}

/// `(dh, dw)` of an LM head `hidden [n, h] · Wᵀ` whose logit gradient for rows
/// `start..start + len` is `dlogits(start, len, logits)` (logits recomputed per chunk, in the
/// work dtype): `dh = d W`, and with `want_w`, `dW = Σ dᵀ h` over the chunks.
pub(super) fn head_grads(
    hidden: &Tensor,
    w: &Tensor,
    want_w: bool,
    dlogits: impl Fn(usize, usize, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let n = hidden.dim(0)?;
    let work = work_dtype(hidden.dtype());
    let mut dh = Vec::with_capacity(n.div_ceil(LM_HEAD_CHUNK));
    let mut dw: Option<Tensor> = None;
    for start in (0..n).step_by(LM_HEAD_CHUNK) {
        let len = LM_HEAD_CHUNK.min(n - start);
        let h = hidden.narrow(0, start, len)?;
        let logits = h.matmul(&w.t()?)?.to_dtype(work)?;
        let d = dlogits(start, len, &logits)?.to_dtype(hidden.dtype())?;
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
