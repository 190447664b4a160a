//! Attention probabilities `softmax(scale · s + mask)` over the last axis as one graph node.
//!
//! Folding the scale and the additive causal mask into the op keeps the mask a constant (no
//! gradient is computed or stored for it) and leaves one saved tensor, the output `p`, which is
//! all the backward needs: `ds = scale · p ⊙ (g − Σ g⊙p)`.

use super::attach::attach1;
use candle_core::{Tensor, D};

/// `softmax(scale · scores + mask)` over the last axis; `mask` broadcasts against `scores`
/// (`0` where attention is allowed, `-inf` where it is not).
pub fn scaled_masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let s = (scores.detach() * scale)?;
    let s = match mask {
        Some(m) => s.broadcast_add(m)?,
        None => s,
    };
    let value = candle_nn::ops::softmax_last_dim(&s.contiguous()?)?;
    attach1(
        "scaled-masked-softmax",
        scores,
        value,
        Box::new(move |_, p, g| {
            let g = g.to_dtype(p.dtype())?;
            let dot = (&g * p)?.sum_keepdim(D::Minus1)?;
            Ok(Some((g.broadcast_sub(&dot)? * p)?.affine(scale, 0.0)?))
        }),
    )
}
