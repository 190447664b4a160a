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
use super::depthwise_cpu as cpu;
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
    /// Batch, channels and the padded input's side lengths.
    input: (usize, usize, usize, usize),
}

impl Geometry {
    fn of(x: &Tensor, w: &Tensor, stride: usize) -> Result<Self> {
        let (n, c, h, wd) = x.dims4()?;
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
        let (oh, ow) = (out_len(h, kh, stride), out_len(wd, kw, stride));
        Ok(Self { kh, kw, stride, oh, ow, input: (n, c, h, wd) })
    }

    /// The CPU kernels' view of the geometry, when they can take `a` and `b`.
    fn cpu_kernel(&self, a: &Tensor, b: &Tensor) -> Option<cpu::Dims> {
        let (n, c, h, w) = self.input;
        let dims = cpu::Dims { n, c, h, w, kh: self.kh, kw: self.kw, stride: self.stride, oh: self.oh, ow: self.ow };
        (super::cpu::applies(a) && super::cpu::applies(b) && a.dtype() == b.dtype()).then_some(dims)
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
        if let Some(dims) = self.cpu_kernel(x, w) {
            return cpu::forward(x, w, dims);
        }
        self.forward_composed(x, w)
    }

    /// [`Self::forward`] as tensor ops (every device and dtype).
    fn forward_composed(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
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
        if let Some(dims) = self.cpu_kernel(x, g) {
            return cpu::kernel_grad(x, g, dims);
        }
        self.kernel_grad_composed(x, g)
    }

    /// [`Self::kernel_grad`] as tensor ops.
    fn kernel_grad_composed(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
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
    fn input_grad(&self, w: &Tensor, g: &Tensor) -> Result<Tensor> {
        if let Some(dims) = self.cpu_kernel(g, w) {
            return cpu::input_grad(g, w, dims);
        }
        self.input_grad_composed(w, g)
    }

    /// [`Self::input_grad`] as tensor ops.
    fn input_grad_composed(&self, w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (n, c, h, wd) = self.input;
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
                let dx = if want_x { Some(geometry.input_grad(w, &g)?) } else { None };
                Ok((dx, Some(geometry.kernel_grad(x, &g)?)))
            }),
        )
    } else {
        attach1(
            "depthwise-conv2d",
            x,
            value,
            Box::new(move |x, _, g| Ok(Some(geometry.input_grad(&wd, &g.to_dtype(x.dtype())?)?))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn values(shape: &[usize], seed: f64, dtype: DType) -> Tensor {
        let count: usize = shape.iter().product();
        let v: Vec<f64> = (0..count).map(|i| ((i as f64 + seed) * 0.731).sin() * 1.7).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn cpu_kernels_match_the_tensor_form_on_odd_shapes() {
        // Odd and even sides, a side smaller than a SIMD register, 1-wide outputs, both strides
        // and kernel sizes, more than one image.
        let shapes =
            [(2, 3, 7, 6, 3, 1), (1, 5, 8, 9, 3, 2), (3, 2, 9, 7, 5, 2), (2, 4, 5, 5, 5, 1), (1, 17, 3, 19, 3, 2)];
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-12 };
            for (n, c, h, w, k, s) in shapes {
                let x = values(&[n, c, h, w], (h * w) as f64, dtype);
                let kernel = values(&[c, 1, k, k], k as f64, dtype);
                let geometry = Geometry::of(&x, &kernel, s).unwrap();
                let what = format!("{dtype:?} {n}x{c}x{h}x{w} k{k} s{s}");
                assert!(geometry.cpu_kernel(&x, &kernel).is_some(), "{what}");
                let fast = geometry.forward(&x, &kernel).unwrap();
                // The same taps added in the same order: the same values.
                assert_eq!(max_diff(&fast, &geometry.forward_composed(&x, &kernel).unwrap()), 0.0, "{what}");
                let g = values(fast.dims(), 3.0, dtype);
                let dx = geometry.input_grad(&kernel, &g).unwrap();
                assert!(max_diff(&dx, &geometry.input_grad_composed(&kernel, &g).unwrap()) < tol, "{what}");
                let dw = geometry.kernel_grad(&x, &g).unwrap();
                assert!(max_diff(&dw, &geometry.kernel_grad_composed(&x, &g).unwrap()) < tol, "{what}");
            }
        }
        // Strided (non-contiguous) inputs are read through a contiguous copy.
        let x = values(&[2, 3, 6, 7], 1.0, DType::F32).transpose(2, 3).unwrap();
        let kernel = values(&[3, 1, 3, 3], 2.0, DType::F32);
        let geometry = Geometry::of(&x, &kernel, 1).unwrap();
        let composed = geometry.forward_composed(&x, &kernel).unwrap();
        assert_eq!(max_diff(&geometry.forward(&x, &kernel).unwrap(), &composed), 0.0);
        // Other dtypes keep the tensor form.
        let half = values(&[1, 2, 5, 5], 1.0, DType::BF16);
        let hk = values(&[2, 1, 3, 3], 1.0, DType::BF16);
        assert!(Geometry::of(&half, &hk, 1).unwrap().cpu_kernel(&half, &hk).is_none());
    }
}
