//! RMSNorm `y = x · r · w` with `r = 1/√(mean(x²) + ε)`, one graph node with a closed-form
//! backward:
//!
//! `dx = r·(g⊙w) − x·r³·mean(g⊙w⊙x)`, `dw = Σ_rows g⊙x·r`.
//!
//! The forward uses candle's fused kernel (it accumulates in f32, so f64 inputs take the exact
//! composed route instead). The weight's gradient is computed only when the weight trains.

use super::attach::{attach1, attach2};
use candle_core::{DType, Tensor, D};

fn composed(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(w)
}

/// `(dx, dw)` of RMSNorm at `x` for output gradient `g`.
fn grads(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64, want_w: bool) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let g = g.to_dtype(x.dtype())?;
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let gw = g.broadcast_mul(w)?;
    let dot = (&gw * x)?.mean_keepdim(D::Minus1)?;
    let dx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&(dot * r.powf(3.0)?)?)?)?;
    let dw = if want_w {
        let h = x.dim(D::Minus1)?;
        let n = x.elem_count() / h;
        Some((g * x.broadcast_mul(&r)?)?.reshape((n, h))?.sum(0)?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// RMSNorm of `x [.., h]` with weight `w [h]`; `w` gets a gradient when it is a variable.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let (xd, wd) = (x.detach(), w.detach());
    let value = if x.dtype() == DType::F64 {
        composed(&xd, &wd, eps)?
    } else {
        candle_nn::ops::rms_norm(&xd.contiguous()?, &wd, eps as f32)?
    };
    if w.is_variable() || w.track_op() {
        attach2(
            "rms-norm",
            x,
            w,
            value,
            Box::new(move |x, w, _, g| {
                let (dx, dw) = grads(x, w, g, eps, true)?;
                Ok((Some(dx), dw))
            }),
        )
    } else {
        attach1("rms-norm", x, value, Box::new(move |x, _, g| Ok(Some(grads(x, &wd, g, eps, false)?.0))))
    }
}
