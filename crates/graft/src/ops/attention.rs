//! Scaled dot-product attention `softmax(scale · q kᵀ + mask) v`, as one graph node in training.
//!
//! Composed from candle ops, the graph would keep the raw scores (the softmax's input) and the
//! probabilities (the softmax's output and the value product's input) of every layer until
//! backward: two `[heads × queries × keys]` tensors per layer, for SmolLM2 at 4 × 256 tokens
//! 19 MB a layer and 566 MB over its 30 layers, more than any other activation. Here the node
//! keeps only `q`, `k` and `v`, which the graph holds anyway, and its backward recomputes the
//! probabilities of its own layer (one more `q kᵀ` product, small beside the projections):
//! with `p = softmax(s)`, `dv = pᵀ g`, `dp = g vᵀ`, `ds = scale · p ⊙ (dp − Σ dp ⊙ p)`,
//! `dq = ds k`, `dk = dsᵀ q`. The mask is a description, rebuilt in backward, so no
//! `[queries × keys]` tensor stays alive either.

use super::attach::attach3;
use candle_core::{DType, Device, Tensor, D};

/// Which keys each query sees: causal over `t` new tokens after `offset` earlier ones (all of
/// which every new token sees), and with a `window`, query position `q` sees only keys `k` with
/// `q − k < window`. `rep` query groups are stacked along the query axis (grouped-query
/// attention without repeating keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalMask {
    /// Query groups stacked along the query axis (1 without grouping).
    pub rep: usize,
    /// New tokens (queries per group).
    pub t: usize,
    /// Earlier positions before the new tokens (cached or prefix keys).
    pub offset: usize,
    /// Sliding window, if any.
    pub window: Option<usize>,
}

impl CausalMask {
    /// The additive mask `[rep · t, offset + t]` (0 where attention is allowed, −∞ where it is
    /// not); `None` when it would mask nothing (one new token within the window).
    pub fn tensor(&self, dtype: DType, device: &Device) -> candle_core::Result<Option<Tensor>> {
        let total = self.offset + self.t;
        if self.t == 1 && self.window.is_none_or(|w| total <= w) {
            return Ok(None);
        }
        let mut m = Vec::with_capacity(self.rep * self.t * total);
        for _ in 0..self.rep {
            for i in 0..self.t {
                let q = self.offset + i;
                for k in 0..total {
                    let seen = k <= q && self.window.is_none_or(|w| q - k < w);
                    m.push(if seen { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        Tensor::from_vec(m, (self.rep * self.t, total), device)?.to_dtype(dtype).map(Some)
    }
}

/// The probabilities `softmax(scale · q kᵀ + mask)`.
fn probabilities(q: &Tensor, k: &Tensor, scale: f64, mask: Option<&CausalMask>) -> candle_core::Result<Tensor> {
    let s = (q.matmul(&k.t()?)? * scale)?;
    let s = match mask.map(|m| m.tensor(s.dtype(), s.device())).transpose()?.flatten() {
        Some(m) => s.broadcast_add(&m)?,
        None => s,
    };
    candle_nn::ops::softmax_last_dim(&s)
}

/// `softmax(scale · q kᵀ + mask) v` for `q [.., m, d]`, `k`, `v [.., n, d]`; in training one
/// node whose backward recomputes the probabilities (see the module doc), otherwise (`train`
/// false) plain tensor ops with nothing kept.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&CausalMask>,
    train: bool,
) -> candle_core::Result<Tensor> {
    if !train {
        return probabilities(q, k, scale, mask)?.matmul(v);
    }
    let value = probabilities(&q.detach(), &k.detach(), scale, mask)?.matmul(&v.detach())?;
    let mask = mask.copied();
    attach3(
        "attention",
        q,
        k,
        v,
        value,
        Box::new(move |q, k, v, _, g| {
            let (q, k, v) = (q.detach(), k.detach(), v.detach());
            let p = probabilities(&q, &k, scale, mask.as_ref())?;
            let g = g.to_dtype(p.dtype())?;
            let dv = p.t()?.matmul(&g)?;
            let dp = g.matmul(&v.t()?)?;
            let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
            let ds = (dp.broadcast_sub(&dot)? * p)?.affine(scale, 0.0)?;
            let dq = ds.matmul(&k)?;
            let dk = ds.t()?.matmul(&q)?;
            Ok((Some(dq), Some(dk), Some(dv)))
        }),
    )
}
