//! A frozen projection plus its LoRA update as one graph node:
//! `y = x Wᵀ + s · (x Aᵀ) Bᵀ`.
//!
//! Composed from candle ops, the update costs eight graph nodes per projection (reshapes,
//! transposes, two matmuls, the scale, the sum), and candle's backward allocates a zero tensor
//! and adds into it for every edge: about ten passes over `[tokens × features]` buffers per
//! projection that carry no information. Here the backward is written out:
//!
//! `g_u = s · g B`, `dx = g W + g_u A`, `dA = g_uᵀ x`, `dB = s · gᵀ (x Aᵀ)`.
//!
//! With LoRA dropout the update reads the dropped input `x̃ = x ⊙ m / keep` (PEFT's
//! `lora_B(lora_A(dropout(x)))`), the base still reads `x`: `dA = g_uᵀ x̃`, `dB = s · gᵀ (x̃ Aᵀ)` and
//! the update's share of `dx` is `(g_u A) ⊙ m / keep`. The node keeps the mask as one byte per
//! element; composed from candle ops the dropped input and its mask stay alive as full-width
//! float tensors through the whole backward, in every projection.

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
    fused(x, weight, a, b, scale, None)
}

/// Dropout on the update's input: which elements of `x` the update keeps.
#[derive(Debug, Clone)]
pub struct InputDropout {
    /// `x`'s shape, `u8`: 1 where the element is kept, 0 where it is dropped.
    pub keep_mask: Tensor,
    /// The keep probability `1 − p`; kept elements are scaled by `1 / keep`.
    pub keep: f64,
}

impl InputDropout {
    /// `x ⊙ m / keep` in `x`'s dtype.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x * (self.keep_mask.to_dtype(x.dtype())? * (1.0 / self.keep))?
    }
}

/// [`lora_linear`] with dropout on the update's input: `x Wᵀ + scale · (x̃ Aᵀ) Bᵀ`,
/// `x̃ = dropout.apply(x)`.
pub fn lora_linear_dropout(
    x: &Tensor,
    weight: &FrozenWeight,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dropout: &InputDropout,
) -> candle_core::Result<Tensor> {
    if dropout.keep_mask.dims() != x.dims() {
        candle_core::bail!("lora_linear: dropout mask {:?} for x {:?}", dropout.keep_mask.dims(), x.dims());
    }
    fused(x, weight, a, b, scale, Some(dropout.clone()))
}

fn fused(
    x: &Tensor,
    weight: &FrozenWeight,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dropout: Option<InputDropout>,
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
        let xd = match &dropout {
            Some(d) => d.apply(&x.detach())?.reshape((rows, inp))?,
            None => x2.clone(),
        };
        let down = (xd.matmul(&a.detach().t()?)? * scale)?;
        let update = down.matmul(&b.detach().t()?)?;
        super::mixed_matmul_add(&x2, &w.t()?, &update)?.reshape([lead.as_slice(), &[out]].concat())?
    };
    let weight = weight.clone();
    attach3(
        "lora-linear",
        x,
        a,
        b,
        value,
        Box::new(move |x, a, b, _, g| {
            let g2 = g.to_dtype(x.dtype())?.reshape((rows, out))?;
            let gu = (g2.matmul(b)? * scale)?;
            let w = weight.dense(x.dtype())?;
            let back = gu.matmul(a)?.reshape(x.shape())?;
            let (xd, du) = match &dropout {
                Some(d) => (d.apply(x)?.reshape((rows, inp))?, d.apply(&back)?),
                None => (x.reshape((rows, inp))?, back),
            };
            let dx = super::mixed_matmul_add(&g2, &w, &du.reshape((rows, inp))?)?.reshape(x.shape())?;
            let da = gu.t()?.matmul(&xd)?;
            let u = (xd.matmul(&a.t()?)? * scale)?;
            let db = g2.t()?.matmul(&u)?;
            Ok((Some(dx), Some(da), Some(db)))
        }),
    )
}
