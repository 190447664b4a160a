//! The cross-entropy of an LM head read in vocabulary slices.
//!
//! A loss over the head `hidden [n, h] · Wᵀ` needs, per row, the log-sum-exp over the whole
//! vocabulary and, for training, `∂nll/∂h = softmax · W − W[target]`. Computed row chunk by row
//! chunk against the whole of `W`, a quantized head (QLoRA's tied embeddings, 30 MB of Q8_0 for
//! SmolLM2) has to exist dense at once (113 MB). Here `W` is read a slice of rows at a time (only
//! that slice dequantized) and the softmax is accumulated online, as flash attention does: each
//! row keeps its running maximum `m`, `l = Σ exp(z − m)` and `a = Σ exp(z − m) W_z` over the
//! entries other than the target's, and a slice with a larger maximum rescales them by
//! `exp(m_old − m_new)`. At the end `nll = ln l + m − z_target` and
//! `∂nll/∂h = a / l − (1 − p_target) W[target]`, with `1 − p_target` summed from the other
//! entries: the plain `(a + p_target W[target]) / l − W[target]` cancels to nothing when the
//! target is near certain, which loses the gradient in bf16. Every slice is read once per pass
//! over the rows, with the same products as the row-chunked form.

use super::cpu::{applies, exp_sum, row_max, with_slice, Real};
use super::frozen_linear::FrozenWeight;
use super::lm_head_loss::work_dtype;
use candle_core::{DType, Tensor, WithDType, D};
use rayon::prelude::*;

/// Vocabulary rows of the head read (dequantized, for a quantized head) at once.
pub const VOCAB_SLICE: usize = 4096;

/// Hidden-state rows per pass over the vocabulary. Each pass reads every slice of the head once;
/// a pass holds `[rows × VOCAB_SLICE]` logits (16 MB in f32).
pub const HEAD_ROWS: usize = 1024;

/// Logits `x [.., h] · Wᵀ` of a frozen head in inference. A quantized head is dequantized a
/// vocabulary slice at a time for its dense products, so only one slice exists dense at once
/// beside the logits.
pub fn head_logits(x: &Tensor, weight: &FrozenWeight) -> candle_core::Result<Tensor> {
    match weight {
        FrozenWeight::Dense(w) => x.broadcast_matmul(&w.to_dtype(x.dtype())?.t()?),
        FrozenWeight::Quantized(_) => {
            let (vocab, _) = weight.dims();
            let parts = (0..vocab)
                .step_by(VOCAB_SLICE)
                .map(|v0| x.broadcast_matmul(&weight.dense_rows(v0, VOCAB_SLICE.min(vocab - v0), x.dtype())?.t()?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, D::Minus1)
        }
    }
}

/// One row's running softmax statistics over the slices seen so far.
#[derive(Debug, Clone, Copy)]
struct RowStats {
    /// The largest logit so far (−∞ before the first slice).
    m: f64,
    /// `Σ exp(z − m)` so far (in f64: tens of thousands of terms summed one by one in f32 lose
    /// about 1e-4 of the loss).
    l: f64,
    /// The target's logit, once its slice has been seen.
    t: f64,
    /// `Σ exp(z − m)` over every entry but the target's: `rest / l` is `1 − p_target`, computed
    /// without the cancellation of `1 − p_target` when the target is near certain.
    rest: f64,
    /// `exp(m_before − m_after)` of the last slice: what earlier sums are rescaled by.
    scale: f64,
}

impl RowStats {
    fn new() -> Self {
        RowStats { m: f64::NEG_INFINITY, l: 0.0, t: 0.0, rest: 0.0, scale: 0.0 }
    }

    /// Takes a slice with maximum `slice_max`; `sums(m_new)` gives its `Σ exp(z − m_new)` and the
    /// target's `exp(z_target − m_new)` (0 when the target is not in the slice).
    fn take(&mut self, slice_max: f64, sums: impl FnOnce(f64) -> (f64, f64)) {
        let m_new = self.m.max(slice_max);
        self.scale = (self.m - m_new).exp();
        let (sum, target) = sums(m_new);
        self.l = self.l * self.scale + sum;
        self.rest = self.rest * self.scale + (sum - target);
        self.m = m_new;
    }
}

/// Per-row NLL `[n]` (work dtype) of the head `hidden · Wᵀ` against `targets` (u32), times
/// `mask` (work dtype) and, with `want_dh`, its gradient with respect to `hidden`,
/// `((softmax − one_hot) · mask) W` (`[n, h]`, hidden's dtype). Nothing here is differentiated:
/// the caller attaches the gradient.
pub(super) fn head_ce(
    hidden: &Tensor,
    weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
    want_dh: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    head_ce_in(hidden, weight, targets, mask, want_dh, HEAD_ROWS, VOCAB_SLICE)
}

/// [`head_ce`] with explicit row and slice sizes (tests use small ones).
fn head_ce_in(
    hidden: &Tensor,
    weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
    want_dh: bool,
    rows: usize,
    slice: usize,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let n = hidden.dim(0)?;
    let (vocab, _) = weight.dims();
    let (dtype, work, dev) = (hidden.dtype(), work_dtype(hidden.dtype()), hidden.device());
    let all_targets = targets.to_vec1::<u32>()?;
    if let Some(&t) = all_targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("lm_head_nll: target {t} is outside the vocabulary of {vocab}");
    }
    let all_mask = mask.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    // Per-row factors as a `[len, 1]` column on the hidden states' device.
    let column = |v: Vec<f64>| -> candle_core::Result<Tensor> {
        let len = v.len();
        Tensor::from_vec(v, (len, 1), &candle_core::Device::Cpu)?.to_dtype(work)?.to_device(dev)
    };
    let (mut nll, mut dh) = (Vec::with_capacity(n.div_ceil(rows)), Vec::new());
    for start in (0..n).step_by(rows.max(1)) {
        let len = rows.min(n - start);
        let (h, targets, mask) =
            (hidden.narrow(0, start, len)?, &all_targets[start..start + len], &all_mask[start..start + len]);
        let mut stats = vec![RowStats::new(); len];
        let mut acc: Option<Tensor> = None;
        for v0 in (0..vocab).step_by(slice.max(1)) {
            let w = weight.dense_rows(v0, slice.min(vocab - v0), dtype)?;
            let logits = super::mixed_matmul(&h, &w.t()?)?.to_dtype(work)?;
            let p = take_slice(&mut stats, &Slice { logits: &logits, targets, v0 }, want_dh)?;
            if let Some(p) = p {
                let part = super::mixed_matmul(&p.to_dtype(dtype)?, &w)?.to_dtype(work)?;
                acc = Some(match acc {
                    Some(a) => (a.broadcast_mul(&column(stats.iter().map(|s| s.scale).collect())?)? + part)?,
                    None => part,
                });
            }
        }
        let value: Vec<f64> = stats.iter().zip(mask).map(|(s, m)| (s.l.ln() + s.m - s.t) * m).collect();
        nll.push(Tensor::from_vec(value, len, &candle_core::Device::Cpu)?.to_dtype(work)?.to_device(dev)?);
        if let Some(a) = acc {
            let ids = Tensor::from_slice(targets, len, dev)?;
            let picked = weight
                .rows(&ids, work)?
                .broadcast_mul(&column(stats.iter().zip(mask).map(|(s, m)| m * s.rest / s.l).collect())?)?;
            let inv_l = column(stats.iter().zip(mask).map(|(s, m)| m / s.l).collect())?;
            dh.push((a.broadcast_mul(&inv_l)? - picked)?.to_dtype(dtype)?);
        }
    }
    let dh = if want_dh { Some(Tensor::cat(&dh, 0)?) } else { None };
    Ok((Tensor::cat(&nll, 0)?, dh))
}

/// One vocabulary slice's logits and where it starts.
#[derive(Clone, Copy)]
struct Slice<'a> {
    /// `[len, width]` logits of vocabulary rows `v0..v0 + width` (work dtype).
    logits: &'a Tensor,
    /// The rows' targets (whole-vocabulary ids).
    targets: &'a [u32],
    /// The slice's first vocabulary row.
    v0: usize,
}

/// Takes a slice's logits into `stats`; with `want_p`, returns `exp(z − m_new)` of the slice
/// (work dtype) for the gradient's product, the targets' entries zeroed.
fn take_slice(stats: &mut [RowStats], slice: &Slice<'_>, want_p: bool) -> candle_core::Result<Option<Tensor>> {
    if applies(slice.logits) {
        return match slice.logits.dtype() {
            DType::F32 => take_slice_cpu::<f32>(stats, slice, want_p),
            _ => take_slice_cpu::<f64>(stats, slice, want_p),
        };
    }
    take_slice_tensor(stats, slice, want_p)
}

/// The target's position within the slice `v0..v0 + width`, if it falls there.
fn local_target(target: u32, v0: usize, width: usize) -> Option<usize> {
    (target as usize).checked_sub(v0).filter(|&j| j < width)
}

/// [`take_slice`] on the CPU: one pass per row, the exponentials written straight into the
/// returned buffer.
fn take_slice_cpu<T: Real>(
    stats: &mut [RowStats],
    slice: &Slice<'_>,
    want_p: bool,
) -> candle_core::Result<Option<Tensor>> {
    let Slice { logits, targets, v0 } = *slice;
    let (len, width) = logits.dims2()?;
    let mut p = vec![T::zero(); if want_p { len * width } else { 0 }];
    with_slice::<T, _>(logits, |z| {
        let f64_of = |v: T| <T as WithDType>::to_f64(v);
        let row = |i: usize, st: &mut RowStats, out: Option<&mut [T]>| {
            let zr = &z[i * width..(i + 1) * width];
            let slice_max = f64_of(row_max(zr));
            let j = local_target(targets[i], v0, width);
            st.take(slice_max, |m| {
                let m = <T as WithDType>::from_f64(m);
                match out {
                    Some(out) => {
                        let sum = exp_sum(zr, m, Some(&mut *out));
                        // The target's column leaves the product: its row enters `dh` once, with
                        // the weight `1 − p_target` taken from `rest`.
                        let target = j.map_or(0.0, |j| f64_of(std::mem::replace(&mut out[j], T::zero())));
                        (sum, target)
                    }
                    None => (exp_sum(zr, m, None), j.map_or(0.0, |j| f64_of((zr[j] - m).exp()))),
                }
            });
            if let Some(j) = j {
                st.t = f64_of(zr[j]);
            }
        };
        if want_p {
            stats
                .par_iter_mut()
                .zip(p.par_chunks_mut(width))
                .enumerate()
                .for_each(|(i, (st, out))| row(i, st, Some(out)));
        } else {
            stats.par_iter_mut().enumerate().for_each(|(i, st)| row(i, st, None));
        }
    })?;
    if !want_p {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(p, (len, width), logits.device())?))
}

/// [`take_slice`] from tensor ops (other devices): the reductions on the device, the per-row
/// statistics on the host.
fn take_slice_tensor(stats: &mut [RowStats], slice: &Slice<'_>, want_p: bool) -> candle_core::Result<Option<Tensor>> {
    let Slice { logits, targets, v0 } = *slice;
    let logits = &logits.contiguous()?;
    let (len, width) = logits.dims2()?;
    let (dev, work) = (logits.device(), logits.dtype());
    let slice_max = logits.max(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let m_new: Vec<f64> = stats.iter().zip(&slice_max).map(|(s, &x)| s.m.max(x)).collect();
    let m_col = Tensor::from_vec(m_new.clone(), (len, 1), dev)?.to_dtype(work)?;
    let p = logits.broadcast_sub(&m_col)?.exp()?;
    let sums = p.sum(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let local: Vec<Option<usize>> = targets.iter().map(|&t| local_target(t, v0, width)).collect();
    let index = Tensor::from_vec(local.iter().map(|j| j.unwrap_or(0) as u32).collect::<Vec<_>>(), (len, 1), dev)?;
    let host = |t: Tensor| -> candle_core::Result<Vec<f64>> { t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>() };
    let picked = host(logits.gather(&index, 1)?)?;
    let target_e: Vec<f64> =
        host(p.gather(&index, 1)?)?.iter().zip(&local).map(|(&e, j)| if j.is_some() { e } else { 0.0 }).collect();
    for (i, st) in stats.iter_mut().enumerate() {
        st.take(slice_max[i], |_| (sums[i], target_e[i]));
        if local[i].is_some() {
            st.t = picked[i];
        }
    }
    if !want_p {
        return Ok(None);
    }
    // The target's column leaves the product, as in the CPU loop.
    let minus = Tensor::from_vec(target_e.iter().map(|e| -e).collect::<Vec<_>>(), (len, 1), dev)?.to_dtype(work)?;
    Ok(Some(p.scatter_add(&index, &minus, 1)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lm_head_loss::ce_rows;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;
    use std::sync::Arc;

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    /// The whole-vocabulary form: logits at once, their cross-entropy rows and `d · W`.
    fn whole(hidden: &Tensor, w: &Tensor, targets: &Tensor, mask: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let logits = hidden.matmul(&w.t().unwrap()).unwrap().to_dtype(work_dtype(hidden.dtype())).unwrap();
        let (nll, d) = ce_rows(&logits, targets, mask, true).unwrap();
        (f64s(&nll), f64s(&d.unwrap().to_dtype(hidden.dtype()).unwrap().matmul(w).unwrap()))
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    /// Slices of every size, rows split over several passes, targets in the first, a middle and
    /// the last slice, masked rows: the NLL and the hidden-state gradient equal the
    /// whole-vocabulary form's, in f32 and f64, through the CPU loop and the tensor form.
    #[test]
    fn slices_give_the_whole_vocabulary_loss_and_gradient() {
        let (n, h, vocab) = (7, 12, 301);
        let hv: Vec<f64> = (0..n * h).map(|k| (k as f64 * 0.37).sin() * 2.0).collect();
        // Logits that rise along the vocabulary, so later slices raise the running maximum.
        let wv: Vec<f64> = (0..vocab * h).map(|k| (k as f64 * 0.113).cos() + (k / h) as f64 * 0.01).collect();
        let targets = Tensor::new(&[0u32, 300, 150, 37, 299, 1, 64], &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let hidden = Tensor::from_vec(hv.clone(), (n, h), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let w = Tensor::from_vec(wv.clone(), (vocab, h), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let mask = Tensor::new(&[1.0f64, 0.0, 1.0, 0.5, 1.0, 1.0, 1.0], &Device::Cpu)
                .unwrap()
                .to_dtype(work_dtype(dtype))
                .unwrap();
            let (want_nll, want_dh) = whole(&hidden, &w, &targets, &mask);
            let tol = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
            let weight = FrozenWeight::Dense(w);
            for (rows, slice) in [(3, 1), (4, 64), (7, 100), (2, 301), (1024, 4096)] {
                let (nll, dh) = head_ce_in(&hidden, &weight, &targets, &mask, true, rows, slice).unwrap();
                assert!(
                    close(&f64s(&nll), &want_nll, tol),
                    "{dtype:?} {rows}×{slice}: {:?} vs {want_nll:?}",
                    f64s(&nll)
                );
                assert!(close(&f64s(&dh.unwrap()), &want_dh, tol), "{dtype:?} {rows}×{slice}: gradient");
                let (alone, none) = head_ce_in(&hidden, &weight, &targets, &mask, false, rows, slice).unwrap();
                assert!(none.is_none());
                assert_eq!(f64s(&alone), f64s(&nll), "the loss does not depend on whether the gradient is wanted");
            }
            // The tensor form of one slice step against the CPU loop.
            let logits =
                hidden.matmul(&weight.dense(dtype).unwrap().t().unwrap()).unwrap().to_dtype(work_dtype(dtype)).unwrap();
            let ids = targets.to_vec1::<u32>().unwrap();
            let (mut a, mut b) = (vec![RowStats::new(); n], vec![RowStats::new(); n]);
            for v0 in [0, 100, 200] {
                let part = logits.narrow(1, v0, 100).unwrap();
                let slice = Slice { logits: &part, targets: &ids, v0 };
                let pa = take_slice(&mut a, &slice, true).unwrap().unwrap();
                let pb = take_slice_tensor(&mut b, &slice, true).unwrap().unwrap();
                assert!(close(&f64s(&pa), &f64s(&pb), tol));
            }
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    close(&[x.m, x.l, x.t, x.rest, x.scale], &[y.m, y.l, y.t, y.rest, y.scale], tol),
                    "{x:?} vs {y:?}"
                );
            }
        }
    }

    /// A quantized head is read slice by slice with the same values as its whole dequantized
    /// weight, and an out-of-range target is refused.
    #[test]
    fn a_quantized_head_reads_its_slices_from_the_blocks() {
        let (n, h, vocab) = (5, 64, 150);
        let hidden =
            Tensor::from_vec((0..n * h).map(|k| (k as f32 * 0.21).sin()).collect(), (n, h), &Device::Cpu).unwrap();
        let wv: Vec<f32> = (0..vocab * h).map(|k| (k as f32 * 0.017).cos()).collect();
        let w = Tensor::from_vec(wv, (vocab, h), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = FrozenWeight::Quantized(Arc::new(QTensor::quantize(&w, dtype).unwrap()));
            let dense = q.dense(DType::F32).unwrap();
            assert_eq!(f64s(&q.dense_rows(37, 50, DType::F32).unwrap()), f64s(&dense.narrow(0, 37, 50).unwrap()));
            let ids = Tensor::new(&[149u32, 0, 77], &Device::Cpu).unwrap();
            assert_eq!(f64s(&q.rows(&ids, DType::F32).unwrap()), f64s(&dense.index_select(&ids, 0).unwrap()));
            let targets = Tensor::new(&[0u32, 149, 3, 88, 120], &Device::Cpu).unwrap();
            let mask = Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
            let (want_nll, want_dh) = whole(&hidden, &dense, &targets, &mask);
            let (nll, dh) = head_ce_in(&hidden, &q, &targets, &mask, true, 2, 40).unwrap();
            assert!(close(&f64s(&nll), &want_nll, 2e-5), "{dtype:?}");
            assert!(close(&f64s(&dh.unwrap()), &want_dh, 2e-5), "{dtype:?}");
            let bad = Tensor::new(&[0u32, 1, 2, 3, 150], &Device::Cpu).unwrap();
            let err = head_ce(&hidden, &q, &bad, &mask, false).unwrap_err().to_string();
            assert!(err.contains("target 150"), "{err}");
        }
    }

    /// A near-certain target in bf16: the gradient keeps its precision (the form that subtracts
    /// the target's row from the probability-weighted sum loses it to cancellation).
    #[test]
    fn a_near_certain_target_keeps_its_gradient_in_bf16() {
        let (n, h, vocab) = (3, 16, 500);
        let hv: Vec<f64> = (0..n * h).map(|k| (k as f64 * 0.53).cos()).collect();
        let mut wv: Vec<f64> = (0..vocab * h).map(|k| (k as f64 * 0.29).sin() * 0.1).collect();
        let targets = [7u32, 260, 499];
        for (i, &t) in targets.iter().enumerate() {
            // The target's row points along the hidden state: its logit leads by about 12.
            for c in 0..h {
                wv[t as usize * h + c] = hv[i * h + c] * 1.5;
            }
        }
        let bf = |v: Vec<f64>, d: (usize, usize)| {
            Tensor::from_vec(v, d, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap()
        };
        let (hidden, w) = (bf(hv, (n, h)), bf(wv, (vocab, h)));
        let targets = Tensor::new(&targets, &Device::Cpu).unwrap();
        let mask = Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
        let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let (_, want) = whole(&f64_of(&hidden), &f64_of(&w), &targets, &mask.to_dtype(DType::F64).unwrap());
        let (_, dh) = head_ce_in(&hidden, &FrozenWeight::Dense(w), &targets, &mask, true, 2, 128).unwrap();
        let got = f64s(&dh.unwrap());
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let err: Vec<f64> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        assert!(norm(&want) > 0.0);
        assert!(norm(&err) < 2e-2 * norm(&want), "relative error {}", norm(&err) / norm(&want));
    }
}
