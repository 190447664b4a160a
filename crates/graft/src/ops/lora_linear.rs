//! A frozen projection plus its LoRA update as one graph node:
//! `y = x Wᵀ + s · (x Aᵀ) Bᵀ`.
//!
//! Composed from candle ops, the update costs eight graph nodes per projection (reshapes,
//! transposes, two matmuls, the scale, the sum), and candle's backward allocates a zero tensor
//! and adds into it for every edge: about ten passes over `[tokens × features]` buffers per
//! projection that carry no information. Here the backward is written out:
//!
//! `g_u = s · g B`, `dx = g W + g_u A`, `dA = g_uᵀ x`, `dB = s · gᵀ (x Aᵀ)`.

use super::attach::attach3;
use super::frozen_linear::FrozenWeight;
use candle_core::Tensor;

/// `x [.., in] → x Wᵀ + scale · (x Aᵀ) Bᵀ [.., out]` with `W` frozen, `a [r, in]` and
/// `b [out, r]` in `x`'s dtype; `x`, `a` and `b` get gradients.
pub fn lora_linear(
    x: &Tensor,
    weight: &FrozenWeight,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (out, inp) = weight.dims();
    let (r, a_in) = a.dims2()?;
    let (b_out, b_r) = b.dims2()?;
    if a_in != inp || b_out != out || b_r != r || x.dim(candle_core::D::Minus1)? != inp {
        candle_core::bail!(
            "lora_linear: x {:?}, weight {:?}, A {:?}, B {:?} do not agree",
            x.dims(),
            weight.dims(),
            a.dims(),
            b.dims()
        );
    }
    let lead = x.dims()[..x.rank() - 1].to_vec();
    let rows = x.elem_count() / inp;
    let value = {
        let x2 = x.detach().reshape((rows, inp))?;
        let w = weight.dense(x.dtype())?;
        let down = (x2.matmul(&a.detach().t()?)? * scale)?;
        (x2.matmul(&w.t()?)? + down.matmul(&b.detach().t()?)?)?.reshape([lead.as_slice(), &[out]].concat())?
    };
    let weight = weight.clone();
    attach3(
        "lora-linear",
        x,
        a,
        b,
        value,
        Box::new(move |x, a, b, _, g| {
            let x2 = x.reshape((rows, inp))?;
            let g2 = g.to_dtype(x.dtype())?.reshape((rows, out))?;
            let gu = (g2.matmul(b)? * scale)?;
            let w = weight.dense(x.dtype())?;
            let dx = (g2.matmul(&w)? + gu.matmul(a)?)?.reshape(x.shape())?;
            let da = gu.t()?.matmul(&x2)?;
            let u = (x2.matmul(&a.t()?)? * scale)?;
            let db = g2.t()?.matmul(&u)?;
            Ok((Some(dx), Some(da), Some(db)))
        }),
    )
}
