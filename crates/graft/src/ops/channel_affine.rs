//! A per-channel affine map of feature maps, `y[n, c, h, w] = x[n, c, h, w] · s[c] + t[c]`, as
//! one graph node: a batch norm with fixed statistics (evaluation mode, frozen batch norm) is
//! exactly this, with `s = γ / √(σ² + ε)` and `t = β − μ · s`.
//!
//! Written with broadcast multiply and add, candle's backward reduces the gradients of `s` and
//! `t` over the batch and spatial dimensions with a strided reduction that walks every element
//! by index arithmetic; here they are
//!
//! `ds[c] = Σ_{n,h,w} g · x`, `dt[c] = Σ_{n,h,w} g`, `dx = g · s[c]`,
//!
//! with the spatial sums taken over contiguous rows ([`channel_sum`]). Only tensor ops are used,
//! so the op runs on every candle device and dtype.

use super::attach::attach3;
use candle_core::{Result, Tensor};

/// `x` `[N, C, H, W]` times `scale` `[C]` plus `shift` `[C]` per channel, with a backward that
/// gives each tracked input its gradient.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    if scale.dims() != [c] || shift.dims() != [c] {
        candle_core::bail!(
            "channel affine: scale {:?} and shift {:?} must both be [{c}] for an input of {c} channels",
            scale.dims(),
            shift.dims()
        );
    }
    let col = move |t: &Tensor| t.reshape((1, c, 1, 1));
    let value = x.detach().broadcast_mul(&col(&scale.detach())?)?.broadcast_add(&col(&shift.detach())?)?;
    let (want_x, want_s, want_t) = (x.track_op(), scale.track_op(), shift.track_op());
    if !(want_x || want_s || want_t) {
        return Ok(value);
    }
    attach3(
        "channel-affine",
        x,
        scale,
        shift,
        value,
        Box::new(move |x, s, _, _, g| {
            let g = g.to_dtype(x.dtype())?;
            let dx = if want_x { Some(g.broadcast_mul(&col(s)?)?) } else { None };
            let ds = if want_s { Some(channel_sum(&(&g * x)?)?) } else { None };
            let dt = if want_t { Some(channel_sum(&g)?) } else { None };
            Ok((dx, ds, dt))
        }),
    )
}

/// The sum over `N`, `H` and `W` of `t` `[N, C, H, W]`, as `[C]`: each image's channel summed
/// over its contiguous `H·W` values first, then the batch.
pub fn channel_sum(t: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = t.dims4()?;
    t.contiguous()?.reshape((n, c, h * w))?.sum(2)?.sum(0)
}
