//! The LM head and cross-entropy fused, so the `[tokens × vocab]` logits never exist whole.
//!
//! A causal-LM loss over `n` tokens and a vocabulary of `V` would otherwise hold `[n × V]`
//! logits, their log-softmax and their gradient at once (for SmolLM2 at 1,024 tokens: 200 MB
//! each in f32). Here the forward reads the head in vocabulary slices ([`super::head_slices`]),
//! keeps only each row's negative log-likelihood and, when training, the hidden-state gradient
//! `(softmax − one_hot) W` of its rows (`[n × h]`, small). A trainable head (full fine-tuning)
//! instead recomputes the logits in row chunks in backward for its own gradient; peak extra
//! memory there is a few `[chunk × V]` buffers.

use super::attach::{attach1, attach2};
use super::cpu::{applies, exp_sum, row_max, with_slice, Real};
use super::frozen_linear::FrozenWeight;
use super::head_slices::head_ce;
use candle_core::{DType, Tensor, WithDType, D};
use rayon::prelude::*;

/// Rows of hidden states turned into logits at once.
pub const LM_HEAD_CHUNK: usize = 128;

/// The dtype losses are accumulated in.
pub(super) fn work_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Per-row NLL of one chunk of logits `[len, V]` (already in the work dtype):
/// `logsumexp(logits) − logits[target]`, times the mask; with `want_d`, also its gradient with
/// respect to the logits, `(softmax − one_hot) · mask` (work dtype).
pub(super) fn ce_rows(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    want_d: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    if applies(logits) && mask.dtype() == logits.dtype() && targets.dtype() == DType::U32 {
        return match logits.dtype() {
            DType::F32 => ce_rows_cpu::<f32>(logits, targets, mask, want_d),
            _ => ce_rows_cpu::<f64>(logits, targets, mask, want_d),
        };
    }
    ce_rows_tensor(logits, targets, mask, want_d)
}

/// [`ce_rows`] from tensor ops (other devices).
fn ce_rows_tensor(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    want_d: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let max = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let lse = (sum.log()? + &max)?;
    let t = targets.unsqueeze(1)?;
    let nll = ((lse - logits.gather(&t, 1)?)?.squeeze(1)? * mask)?;
    let d = if want_d {
        let minus_one = Tensor::full(-1f64, t.dims(), e.device())?.to_dtype(logits.dtype())?;
        let d = e.broadcast_div(&sum)?.scatter_add(&t, &minus_one, 1)?;
        Some(d.broadcast_mul(&mask.unsqueeze(1)?)?)
    } else {
        None
    };
    Ok((nll, d))
}

/// [`ce_rows`] on the CPU, one pass per row: the exponentials go straight into the gradient
/// buffer and are scaled there, so a chunk holds its logits and one `[len, V]` output rather than
/// the half-dozen intermediates of the tensor form.
fn ce_rows_cpu<T: Real>(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    want_d: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (len, vocab) = logits.dims2()?;
    let targets = targets.to_vec1::<u32>()?;
    let mask = mask.to_vec1::<T>()?;
    if targets.len() != len || mask.len() != len {
        candle_core::bail!("ce_rows: {len} rows of logits, {} targets, {} mask values", targets.len(), mask.len());
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("ce_rows: target {t} is outside the vocabulary of {vocab}");
    }
    let mut nll = vec![T::zero(); len];
    let mut d = vec![T::zero(); if want_d { len * vocab } else { 0 }];
    with_slice::<T, _>(logits, |z| {
        let row = |i: usize, nll: &mut T, out: Option<&mut [T]>| {
            let zr = &z[i * vocab..(i + 1) * vocab];
            let max = row_max(zr);
            let f64_of = |v: T| <T as WithDType>::to_f64(v);
            let sum = match out {
                Some(out) => {
                    let sum = exp_sum(zr, max, Some(&mut *out));
                    let scale = <T as WithDType>::from_f64(f64_of(mask[i]) / sum);
                    for o in out.iter_mut() {
                        *o *= scale;
                    }
                    out[targets[i] as usize] -= mask[i];
                    sum
                }
                None => exp_sum(zr, max, None),
            };
            let lse = sum.ln() + f64_of(max);
            *nll = <T as WithDType>::from_f64((lse - f64_of(zr[targets[i] as usize])) * f64_of(mask[i]));
        };
        if want_d {
            nll.par_iter_mut().zip(d.par_chunks_mut(vocab)).enumerate().for_each(|(i, (n, out))| row(i, n, Some(out)));
        } else {
            nll.par_iter_mut().enumerate().for_each(|(i, n)| row(i, n, None));
        }
    })?;
    let dev = logits.device();
    let d = if want_d { Some(Tensor::from_vec(d, (len, vocab), dev)?) } else { None };
    Ok((Tensor::from_vec(nll, len, dev)?, d))
}

/// The cross-entropy gradient with respect to one chunk of logits `[len, V]` (work dtype) in
/// backward: `(softmax − one_hot) · coef`, `coef [len]` being the output gradient times the mask.
pub(super) fn ce_dlogits(logits: &Tensor, targets: &Tensor, coef: &Tensor) -> candle_core::Result<Tensor> {
    let t = targets.unsqueeze(1)?;
    let p = candle_nn::ops::softmax_last_dim(logits)?;
    let minus_one = Tensor::full(-1f64, t.dims(), p.device())?.to_dtype(logits.dtype())?;
    p.scatter_add(&t, &minus_one, 1)?.broadcast_mul(&coef.unsqueeze(1)?)
}

/// `(dh, dw)` for output gradient `g [n]`: per chunk `d logits = (softmax − one_hot) · g · mask`.
fn grads(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    g: &Tensor,
    want_w: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let coef = (g.to_dtype(work_dtype(hidden.dtype()))? * mask)?;
    head_grads(hidden, w, want_w, |start, len, logits| {
        ce_dlogits(logits, &targets.narrow(0, start, len)?, &coef.narrow(0, start, len)?)
    })
}

/// `(dh, dw)` of an LM head `hidden [n, h] · Wᵀ` whose logit gradient for rows
/// `start..start + len` is `dlogits(start, len, logits)` (logits recomputed per chunk, in the
/// work dtype): `dh = d W`, and with `want_w`, `dW = Σ dᵀ h` over the chunks.
pub(super) fn head_grads(
    hidden: &Tensor,
    w: &Tensor,
    want_w: bool,
    dlogits: impl Fn(usize, usize, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let n = hidden.dim(0)?;
    let work = work_dtype(hidden.dtype());
    let mut dh = Vec::with_capacity(n.div_ceil(LM_HEAD_CHUNK));
    let mut dw: Option<Tensor> = None;
    for start in (0..n).step_by(LM_HEAD_CHUNK) {
        let len = LM_HEAD_CHUNK.min(n - start);
        let h = hidden.narrow(0, start, len)?;
        let logits = super::mixed_matmul(&h, &w.t()?)?.to_dtype(work)?;
        let d = dlogits(start, len, &logits)?.to_dtype(hidden.dtype())?;
        dh.push(super::mixed_matmul(&d, w)?);
        if want_w {
            let part = super::mixed_matmul(&d.t()?, &h)?;
            dw = Some(match dw {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
    }
    Ok((Tensor::cat(&dh, 0)?, dw))
}

/// Per-row negative log-likelihood `[n]` (f32, or f64 for f64 inputs) of the logits
/// `hidden [n, h] · Wᵀ` against `targets [n]` (u32), multiplied by `mask [n]` (1 = counts).
///
/// A dense `weight` that is a trainable variable (full fine-tuning with tied embeddings) also
/// receives its gradient; a frozen or quantized one does not.
pub fn lm_head_nll(
    hidden: &Tensor,
    weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (_, inp) = weight.dims();
    if h != inp || targets.dims1()? != n || mask.dims1()? != n {
        candle_core::bail!(
            "lm_head_nll: hidden {:?}, weight {:?}, targets {:?}, mask {:?} do not agree",
            hidden.dims(),
            weight.dims(),
            targets.dims(),
            mask.dims()
        );
    }
    let work = work_dtype(hidden.dtype());
    let mask = mask.to_dtype(work)?.detach();
    let targets = targets.detach();
    let hd = hidden.detach();
    let trainable = match weight {
        FrozenWeight::Dense(w) if w.is_variable() || w.track_op() => Some(w.clone()),
        _ => None,
    };
    // Each row's NLL depends on its own hidden state only, so for a frozen head the gradient
    // is `g_i · ∂nll_i/∂h_i`: computed here from the logits at hand, the backward needs no
    // second pass over the vocabulary. A trainable head needs `g` for its own gradient and
    // recomputes the logits in backward instead.
    let want_dh = trainable.is_none() && hidden.track_op();
    // The head is read in vocabulary slices (a quantized one dequantized a slice at a time); a
    // trainable head's forward reads its detached values the same way.
    let read = match &trainable {
        Some(w) => FrozenWeight::Dense(w.detach()),
        None => weight.clone(),
    };
    let (value, dh_unit) = head_ce(&hd, &read, &targets, &mask, want_dh)?;
    match (trainable, dh_unit) {
        (Some(w), _) => attach2(
            "lm-head-nll",
            hidden,
            &w,
            value,
            Box::new(move |h, w, _, g| {
                let (dh, dw) = grads(h, w, &targets, &mask, g, true)?;
                Ok((Some(dh), dw))
            }),
        ),
        (None, Some(dh_unit)) => attach1(
            "lm-head-nll",
            hidden,
            value,
            Box::new(move |_, _, g| Ok(Some(dh_unit.broadcast_mul(&g.to_dtype(dh_unit.dtype())?.unsqueeze(1)?)?))),
        ),
        // Not differentiated (evaluation): no graph node needed.
        (None, None) => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The CPU loop and the tensor form give the same NLL and logit gradient, masked rows
    /// included, in f32 and f64, with and without the gradient.
    #[test]
    fn cpu_rows_match_the_tensor_form() {
        let (len, vocab) = (5, 1003);
        let z: Vec<f64> = (0..len * vocab).map(|k| ((k as f64 * 0.731).sin() * 9.0) + (k % 7) as f64).collect();
        let targets = Tensor::new(&[0u32, 17, 1002, 500, 3], &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let logits = Tensor::from_vec(z.clone(), (len, vocab), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let mask = Tensor::new(&[1.0f64, 0.0, 1.0, 0.5, 1.0], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let f64s =
                |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap() };
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            for want_d in [false, true] {
                let (n_cpu, d_cpu) = ce_rows(&logits, &targets, &mask, want_d).unwrap();
                let (n_ten, d_ten) = ce_rows_tensor(&logits, &targets, &mask, want_d).unwrap();
                let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()));
                assert!(close(&f64s(&n_cpu), &f64s(&n_ten)), "{dtype:?}: {:?} vs {:?}", f64s(&n_cpu), f64s(&n_ten));
                assert_eq!(f64s(&n_cpu)[1], 0.0, "a masked row adds nothing");
                assert_eq!(d_cpu.is_some(), want_d);
                if let (Some(a), Some(b)) = (d_cpu, d_ten) {
                    assert!(close(&f64s(&a), &f64s(&b)), "{dtype:?}: gradient");
                }
            }
        }
        // Over a real vocabulary size the f32 loop stays within f32 rounding of the f64 value
        // (summed one by one in f32, 49,152 exponentials were off by about 1e-4).
        let vocab = 49_152;
        let z: Vec<f64> = (0..2 * vocab).map(|k| (k as f64 * 0.0137).sin() * 4.0 + (k % 11) as f64 * 0.3).collect();
        let logits = Tensor::from_vec(z, (2, vocab), &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let (t2, m2) =
            (Tensor::new(&[7u32, 40_000], &Device::Cpu).unwrap(), Tensor::ones(2, DType::F32, &Device::Cpu).unwrap());
        let got: Vec<f32> = ce_rows(&logits, &t2, &m2, true).unwrap().0.to_vec1().unwrap();
        let exact =
            ce_rows_tensor(&logits.to_dtype(DType::F64).unwrap(), &t2, &m2.to_dtype(DType::F64).unwrap(), false)
                .unwrap()
                .0;
        for (g, e) in got.iter().zip(exact.to_vec1::<f64>().unwrap()) {
            assert!((*g as f64 - e).abs() < 1e-5, "f32 {g} vs f64 {e}");
        }
        let (len, vocab) = (5, 1003);
        let bad = Tensor::new(&[0u32, 1, 2, 3, 1003], &Device::Cpu).unwrap();
        let logits = Tensor::from_vec(vec![0.5f64; len * vocab], (len, vocab), &Device::Cpu).unwrap();
        let mask = Tensor::ones(len, DType::F64, &Device::Cpu).unwrap();
        assert!(ce_rows(&logits, &bad, &mask, true).unwrap_err().to_string().contains("target 1003"));
    }
}
