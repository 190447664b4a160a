//! The Universal Logit Distillation distance (Boizard et al. 2024) between two distributions over
//! different vocabularies, per row: sort both in decreasing order, keep the `k` largest of each
//! (zero-padding the shorter to a common length), and take the L1 distance of the sorted vectors,
//! `D = Σ_{i<k} |q↓_i − p↓_i|`. This is the paper's closed form of the Wasserstein-1 distance
//! under its assumption of a uniform transport cost between any two tokens; it needs no mapping
//! between the two vocabularies, only two probability vectors.
//!
//! Gradient, with the sort permutation `π` of `q` held fixed (as autograd through a sort does):
//! `∂D/∂q_{π(i)} = sign(q↓_i − p↓_i)` for `i < k` and 0 for the tokens outside the student's top
//! `k`, so `u = q ⊙ ∂D/∂q` is `k`-sparse; the caller turns it into a logit gradient through the
//! softmax like every other divergence of [`kd_loss`](super::kd_loss).
//!
//! The top `k` are found on the host, one row at a time (an `O(V)` selection, then a sort of `k`
//! values): no candle backend sorts a 262k-wide row, and only `k` indices per row come back to
//! the device, where the values are gathered.

use candle_core::{DType, Tensor};
use std::cmp::Ordering;

/// Column indices of the `k` largest values of `row`, largest first; ties broken by the lower
/// index, NaN treated as equal (never panics).
fn top_k_of<T: PartialOrd + Copy>(row: &[T], k: usize) -> Vec<u32> {
    let order = |a: &usize, b: &usize| row[*b].partial_cmp(&row[*a]).unwrap_or(Ordering::Equal).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx.into_iter().map(|i| i as u32).collect()
}

/// The `min(k, V)` largest values per row of `x [len, V]` (decreasing) and their indices
/// `[len, min(k, V)]` (u32), on `x`'s device.
fn top_k(x: &Tensor, k: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let (len, v) = x.dims2()?;
    let k = k.min(v);
    let mut idx = Vec::with_capacity(len * k);
    for r in 0..len {
        let row = x.get(r)?;
        match x.dtype() {
            DType::F64 => idx.extend(top_k_of(&row.to_vec1::<f64>()?, k)),
            _ => idx.extend(top_k_of(&row.to_dtype(DType::F32)?.to_vec1::<f32>()?, k)),
        }
    }
    let idx = Tensor::from_vec(idx, (len, k), x.device())?;
    Ok((x.contiguous()?.gather(&idx, 1)?, idx))
}

/// `x [len, n]` padded with zero columns to `[len, width]`.
fn pad_to(x: &Tensor, width: usize) -> candle_core::Result<Tensor> {
    let n = x.dim(1)?;
    if n >= width {
        return Ok(x.clone());
    }
    x.pad_with_zeros(1, 0, width - n)
}

/// The ULD distance per row `[len]` between the student's probabilities `q [len, V_s]` and the
/// teacher's `p [len, V_t]` over their `top_k` largest entries; with `want_u`, also
/// `u = q ⊙ ∂D/∂q` `[len, V_s]` (module docs).
pub(super) fn uld_rows(
    q: &Tensor,
    p: &Tensor,
    top_k_n: usize,
    want_u: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (qs, qi) = top_k(q, top_k_n)?;
    let (ps, _) = top_k(p, top_k_n)?;
    let width = qs.dim(1)?.max(ps.dim(1)?);
    let diff = (pad_to(&qs, width)? - pad_to(&ps, width)?)?;
    let d = diff.abs()?.sum(1)?;
    let u = if want_u {
        let sign = diff.narrow(1, 0, qs.dim(1)?)?.sign()?;
        Some(q.zeros_like()?.scatter_add(&qi, &(qs * sign)?, 1)?)
    } else {
        None
    };
    Ok((d, u))
}
