//! Depthwise 2-D convolution (one filter per channel, `groups = channels`) as one graph node
//! with a closed-form backward.
//!
//! candle runs a grouped convolution as one convolution per group, cut out of the input and
//! stitched back together, so a depthwise layer of `C` channels records `C` convolutions, `C`
//! slices and a concatenation, and the kernel gradient of each goes through a transposed
//! convolution. Written as a sum over the `KH × KW` kernel taps instead,
//!
//! `y[n, c, a, b] = Σᵢⱼ w[c, 0, i, j] · x[n, c, s·a + i, s·b + j]`,
//!
//! the forward is `KH·KW` broadcast multiply-adds over whole feature maps, and so is the backward:
//!
//! `dw[c, 0, i, j] = Σ_{n,a,b} g[n, c, a, b] · x[n, c, s·a + i, s·b + j]`,
//! `dx[n, c, s·a + i, s·b + j] += w[c, 0, i, j] · g[n, c, a, b]`.
//!
//! The input must already be padded (the models pad as TensorFlow or PyTorch do themselves).
//! Only tensor ops are used, so the op runs on every candle device and dtype.

use super::attach::{attach1, attach2};
use candle_core::{Result, Tensor};

/// Output side of a valid (unpadded) convolution over `len` with `kernel` taps and `stride`.
fn out_len(len: usize, kernel: usize, stride: usize) -> usize {
    (len - kernel) / stride + 1
}

/// The geometry of one depthwise convolution.
#[derive(Clone, Copy)]
struct Geometry {
    kh: usize,
    kw: usize,
    stride: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn of(x: &Tensor, w: &Tensor, stride: usize) -> Result<Self> {
        let (_, c, h, wd) = x.dims4()?;
        let (wc, one, kh, kw) = w.dims4()?;
        if stride == 0 {
            candle_core::bail!("depthwise convolution: stride must be at least 1");
        }
        if wc != c || one != 1 {
            candle_core::bail!(
                "depthwise convolution: kernel {:?} does not fit an input of {c} channels (expected [{c}, 1, kh, kw])",
                w.dims()
            );
        }
        if kh == 0 || kw == 0 || kh > h || kw > wd {
            candle_core::bail!("depthwise convolution: kernel {kh}x{kw} does not fit an input of {h}x{wd}");
        }
        Ok(Self { kh, kw, stride, oh: out_len(h, kh, stride), ow: out_len(wd, kw, stride) })
    }

    /// The `stride²` phases of `x`: phase `(p, q)` holds `x[.., s·a + p, s·b + q]` as a contiguous
    /// `[N, C, ⌈H/s⌉, ⌈W/s⌉]` tensor (zeros past the edge), index `p·s + q`. Tap `(i, j)` reads
    /// phase `(i mod s, j mod s)` from row `i / s`, column `j / s` on: a view, not a copy.
    fn phases(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let s = self.stride;
        if s == 1 {
            return Ok(vec![x.clone()]);
        }
        let (n, c, h, w) = x.dims4()?;
        let (hs, ws) = (h.div_ceil(s), w.div_ceil(s));
        let grid =
            x.pad_with_zeros(2, 0, hs * s - h)?.pad_with_zeros(3, 0, ws * s - w)?.reshape((n, c, hs, s, ws, s))?;
        let mut phases = Vec::with_capacity(s * s);
        for p in 0..s {
            for q in 0..s {
                phases.push(grid.narrow(3, p, 1)?.narrow(5, q, 1)?.reshape((n, c, hs, ws))?);
            }
        }
        Ok(phases)
    }

    /// The input values tap `(i, j)` multiplies, `x[n, c, s·a + i, s·b + j]` as `[N, C, OH, OW]`.
    fn tap(&self, phases: &[Tensor], i: usize, j: usize) -> Result<Tensor> {
        let s = self.stride;
        phases[(i % s) * s + j % s].narrow(2, i / s, self.oh)?.narrow(3, j / s, self.ow)
    }

    /// The per-channel weight of tap `(i, j)` as `[1, C, 1, 1]`.
    fn weight(&self, w: &Tensor, i: usize, j: usize) -> Result<Tensor> {
        let c = w.dim(0)?;
        w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))
    }

    fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let phases = self.phases(x)?;
        let mut y: Option<Tensor> = None;
        for i in 0..self.kh {
            for j in 0..self.kw {
                let term = self.tap(&phases, i, j)?.broadcast_mul(&self.weight(w, i, j)?)?;
                y = Some(match y {
                    None => term,
                    Some(y) => (y + term)?,
                });
            }
        }
        Ok(y.expect("a kernel has at least one tap"))
    }

    /// The kernel's gradient `[C, 1, KH, KW]` for output gradient `g`.
    fn kernel_grad(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let phases = self.phases(x)?;
        let c = g.dim(1)?;
        let mut taps = Vec::with_capacity(self.kh * self.kw);
        for i in 0..self.kh {
            for j in 0..self.kw {
                taps.push(super::channel_sum(&(self.tap(&phases, i, j)? * g)?)?);
            }
        }
        Tensor::stack(&taps, 1)?.reshape((c, 1, self.kh, self.kw))
    }

    /// The input's gradient `[N, C, H, W]` for output gradient `g`: each tap's `w · g` added to
    /// the phase and the positions it read, then the phases interleaved back.
    fn input_grad(&self, x: &Tensor, w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (n, c, h, wd) = x.dims4()?;
        let (s, oh, ow) = (self.stride, self.oh, self.ow);
        let (hs, ws) = (h.div_ceil(s), wd.div_ceil(s));
        let mut acc: Vec<Option<Tensor>> = vec![None; s * s];
        for i in 0..self.kh {
            for j in 0..self.kw {
                let (r, q) = (i / s, j / s);
                let term = g.broadcast_mul(&self.weight(w, i, j)?)?.pad_with_zeros(2, r, hs - r - oh)?.pad_with_zeros(
                    3,
                    q,
                    ws - q - ow,
                )?;
                let slot = &mut acc[(i % s) * s + j % s];
                *slot = Some(match slot.take() {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        let phases = acc
            .into_iter()
            .map(|a| a.map_or_else(|| Tensor::zeros((n, c, hs, ws), g.dtype(), g.device()), Ok))
            .collect::<Result<Vec<_>>>()?;
        if s == 1 {
            return Ok(phases.into_iter().next().expect("one phase"));
        }
        // Interleave: rows of phase p go to s·a + p, columns of phase q to s·b + q.
        let rows = phases.chunks(s).map(|row| Tensor::stack(row, 4)).collect::<Result<Vec<_>>>()?;
        Tensor::stack(&rows, 3)?.reshape((n, c, hs * s, ws * s))?.narrow(2, 0, h)?.narrow(3, 0, wd)
    }
}

/// Depthwise convolution of an already padded `x` `[N, C, H, W]` with `w` `[C, 1, KH, KW]` at
/// `stride`, giving `[N, C, (H − KH)/s + 1, (W − KW)/s + 1]`: the same values as candle's
/// `x.conv2d(w, 0, stride, 1, C)`, recorded as one node whose backward gives `x` its gradient
/// and `w` one when it trains.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let geometry = Geometry::of(x, w, stride)?;
    let (xd, wd) = (x.detach(), w.detach());
    let value = geometry.forward(&xd, &wd)?;
    if w.track_op() {
        let want_x = x.track_op();
        attach2(
            "depthwise-conv2d",
            x,
            w,
            value,
            Box::new(move |x, w, _, g| {
                let g = g.to_dtype(x.dtype())?;
                let dx = if want_x { Some(geometry.input_grad(x, w, &g)?) } else { None };
                Ok((dx, Some(geometry.kernel_grad(x, &g)?)))
            }),
        )
    } else {
        attach1(
            "depthwise-conv2d",
            x,
            value,
            Box::new(move |x, _, g| Ok(Some(geometry.input_grad(x, &wd, &g.to_dtype(x.dtype())?)?))),
        )
    }
}
