//! Rotary position embedding (half rotation) as one graph node.
//!
//! RoPE rotates each pair `(x₁, x₂)` by a position's angle θ; its Jacobian is the rotation by
//! `−θ`, so the backward is the same fused kernel run on the output gradient with `sin` negated.
//! The cos/sin tables are constants and get no gradient.

use super::attach::attach1;
use candle_core::Tensor;

/// Rotates `x [b, heads, t, head_dim]` with `cos`/`sin` `[t, head_dim/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let value = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, cos, sin)?;
    let (cos, neg_sin) = (cos.clone(), sin.neg()?);
    attach1(
        "rope",
        x,
        value,
        Box::new(move |_, _, g| {
            let g = g.contiguous()?;
            Ok(Some(candle_nn::rotary_emb::rope(&g, &cos, &neg_sin)?))
        }),
    )
}
