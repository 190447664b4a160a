//! A 1x1 convolution (a linear map over channels, the same at every pixel),
//! `y[n, o, p] = Σ_c w[o, c] · x[n, c, p]` for `x` `[N, C, P]` (`P` pixels), as one graph node.
//!
//! As a batched matmul of the weight broadcast over the batch, candle's backward computes one
//! weight gradient per image, `[N, O, C]`, and then reduces it over the batch with a strided sum:
//! in the deep layers of a CNN, where `O · C` is far larger than `C · P`, that is most of the
//! backward. Here the weight gradient is one product over all pixels of all images,
//!
//! `dw = g′ · x′ᵀ` with `g′ = [O, N·P]` and `x′ = [C, N·P]`,
//!
//! and the input gradient `dx[n] = wᵀ · g[n]` is computed only when `x` needs one (and `dw` only
//! when `w` trains). Only tensor ops are used, so the op runs on every candle device and dtype.

use super::attach::{attach1, attach2};
use candle_core::{Result, Tensor};

/// `w` `[O, C]` applied to every pixel of `x` `[N, C, P]`, giving `[N, O, P]`, with a backward
/// that gives each tracked input its gradient.
pub fn pointwise_conv(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, c, _) = x.dims3()?;
    let (_, wc) = w.dims2()?;
    if wc != c {
        candle_core::bail!("pointwise convolution: weight {:?} does not take an input of {c} channels", w.dims());
    }
    let product = move |w: &Tensor, x: &Tensor| w.broadcast_left(n)?.matmul(x);
    let value = product(&w.detach(), &x.detach())?;
    let input_grad = move |w: &Tensor, g: &Tensor| product(&w.t()?, &g.to_dtype(w.dtype())?);
    if !w.track_op() {
        if !x.track_op() {
            return Ok(value);
        }
        let w = w.detach();
        return attach1("pointwise-conv", x, value, Box::new(move |_, _, g| Ok(Some(input_grad(&w, g)?))));
    }
    let want_x = x.track_op();
    attach2(
        "pointwise-conv",
        x,
        w,
        value,
        Box::new(move |x, w, _, g| {
            let g = g.to_dtype(x.dtype())?;
            let dx = if want_x { Some(input_grad(w, &g)?) } else { None };
            let (o, p) = (g.dim(1)?, g.dim(2)?);
            let rows = |t: &Tensor, width: usize| t.transpose(0, 1)?.contiguous()?.reshape((width, n * p));
            let dw = rows(&g, o)?.matmul(&rows(x, c)?.t()?)?;
            Ok((dx, Some(dw)))
        }),
    )
}
