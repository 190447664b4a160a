//! Scaled dot-product attention `softmax(scale · q kᵀ + mask) v`, as one graph node in training.
//!
//! Composed from candle ops, the graph would keep the raw scores (the softmax's input) and the
//! probabilities (the softmax's output and the value product's input) of every layer until
//! backward: two `[heads × queries × keys]` tensors per layer, for SmolLM2 at 4 × 256 tokens
//! 19 MB a layer and 566 MB over its 30 layers, more than any other activation. Here the node
//! keeps only `q`, `k` and `v`, which the graph holds anyway, and its backward recomputes the
//! probabilities of its own layer (one more `q kᵀ` product, small beside the projections):
//! with `p = softmax(s)`, `dv = pᵀ g`, `dp = g vᵀ`, `ds = scale · p ⊙ (dp − Σ dp ⊙ p)`,
//! `dq = ds k`, `dk = dsᵀ q`. The mask is a description, rebuilt in backward, so no
//! `[queries × keys]` tensor stays alive either.

use super::attach::attach3;
use candle_core::{DType, Device, Tensor, D};

/// Which keys each query sees: causal over `t` new tokens after `offset` earlier ones (all of
/// which every new token sees), and with a `window`, query position `q` sees only keys `k` with
/// `q − k < window`. `rep` query groups are stacked along the query axis (grouped-query
/// attention without repeating keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalMask {
    /// Query groups stacked along the query axis (1 without grouping).
    pub rep: usize,
    /// New tokens (queries per group).
    pub t: usize,
    /// Earlier positions before the new tokens (cached or prefix keys).
    pub offset: usize,
    /// Sliding window, if any.
    pub window: Option<usize>,
}

impl CausalMask {
    /// The additive mask `[rep · t, offset + t]` (0 where attention is allowed, −∞ where it is
    /// not); `None` when it would mask nothing (one new token within the window).
    pub fn tensor(&self, dtype: DType, device: &Device) -> candle_core::Result<Option<Tensor>> {
        let total = self.offset + self.t;
        if self.t == 1 && self.window.is_none_or(|w| total <= w) {
            return Ok(None);
        }
        let mut m = Vec::with_capacity(self.rep * self.t * total);
        for _ in 0..self.rep {
            for i in 0..self.t {
                let q = self.offset + i;
                for k in 0..total {
                    let seen = k <= q && self.window.is_none_or(|w| q - k < w);
                    m.push(if seen { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        Tensor::from_vec(m, (self.rep * self.t, total), device)?.to_dtype(dtype).map(Some)
    }
}

/// The probabilities `softmax(scale · q kᵀ + mask)`, `mask` the additive tensor of
/// [`CausalMask::tensor`].
fn probabilities(q: &Tensor, k: &Tensor, scale: f64, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let s = (q.matmul(&k.t()?)? * scale)?;
    match mask {
        Some(m) => candle_nn::ops::softmax_last_dim(&s.broadcast_add(m)?),
        None => candle_nn::ops::softmax_last_dim(&s),
    }
}

/// The additive mask tensor of `mask` in `like`'s dtype and device, built once per call and
/// shared by its chunks.
fn mask_tensor(mask: Option<&CausalMask>, like: &Tensor) -> candle_core::Result<Option<Tensor>> {
    Ok(mask.map(|m| m.tensor(like.dtype(), like.device())).transpose()?.flatten())
}

/// Bytes of one chunk's `[queries × keys]` score tensors: attention runs over the leading
/// (batch × head) rows in chunks whose scores stay under this, so forward and backward hold a
/// few megabytes of scores and probabilities at a time rather than every head's at once.
const CHUNK_SCORE_BYTES: usize = 4 << 20;

/// `softmax(scale · q kᵀ + mask) v` for `q [.., m, d]`, `k`, `v [.., n, d]`; in training one
/// node whose backward recomputes the probabilities (see the module doc), otherwise (`train`
/// false) plain tensor ops with nothing kept. Both run over the leading rows in chunks of at
/// most 4 MB of scores.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&CausalMask>,
    train: bool,
) -> candle_core::Result<Tensor> {
    attention_in_chunks([q, k, v], scale, mask, train, CHUNK_SCORE_BYTES)
}

/// [`attention`] of `[q, k, v]` with chunks whose scores stay under `chunk_bytes`.
fn attention_in_chunks(
    [q, k, v]: [&Tensor; 3],
    scale: f64,
    mask: Option<&CausalMask>,
    train: bool,
    chunk_bytes: usize,
) -> candle_core::Result<Tensor> {
    let mask_t = mask_tensor(mask, q)?;
    let forward = |[q, k, v]: [&Tensor; 3]| Ok([probabilities(q, k, scale, mask_t.as_ref())?.matmul(v)?]);
    if !train {
        return chunked([q, k, v], chunk_bytes, forward).map(|[o]| o);
    }
    let [value] = chunked([&q.detach(), &k.detach(), &v.detach()], chunk_bytes, forward)?;
    drop(mask_t);
    let mask = mask.copied();
    attach3(
        "attention",
        q,
        k,
        v,
        value,
        Box::new(move |q, k, v, _, g| {
            let g = g.to_dtype(q.dtype())?;
            let mask_t = mask_tensor(mask.as_ref(), q)?;
            let [dq, dk, dv] = chunked([&q.detach(), &k.detach(), &v.detach(), &g], chunk_bytes, |[q, k, v, g]| {
                let p = probabilities(q, k, scale, mask_t.as_ref())?;
                let dv = p.t()?.matmul(g)?;
                let dp = g.matmul(&v.t()?)?;
                let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
                let ds = (dp.broadcast_sub(&dot)? * p)?.affine(scale, 0.0)?;
                Ok([ds.matmul(k)?, ds.t()?.matmul(q)?, dv])
            })?;
            Ok((Some(dq), Some(dk), Some(dv)))
        }),
    )
}

/// Runs `f` on chunks of the leading rows of `[.., rows, cols]` inputs (the first is the
/// queries, the second the keys: their row counts size a chunk's scores, kept under
/// `chunk_bytes`) and joins its outputs along those rows. Inputs whose leading shapes differ run
/// whole.
fn chunked<const I: usize, const O: usize>(
    inputs: [&Tensor; I],
    chunk_bytes: usize,
    f: impl Fn([&Tensor; I]) -> candle_core::Result<[Tensor; O]>,
) -> candle_core::Result<[Tensor; O]> {
    let dims = inputs[0].dims();
    let lead = dims.len().saturating_sub(2);
    let rows: usize = dims[..lead].iter().product();
    let same_lead = inputs.iter().all(|t| t.rank() == dims.len() && t.dims()[..lead] == dims[..lead]);
    let scores = inputs[0].dim(lead)? * inputs[1].dim(lead)? * inputs[0].dtype().size_in_bytes();
    let per_chunk = (chunk_bytes / scores.max(1)).max(1);
    if rows <= per_chunk || !same_lead {
        return f(inputs);
    }
    let flat = inputs
        .iter()
        .map(|t| t.reshape((rows, t.dim(lead)?, t.dim(lead + 1)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut parts: [Vec<Tensor>; O] = std::array::from_fn(|_| Vec::new());
    for start in (0..rows).step_by(per_chunk) {
        let len = per_chunk.min(rows - start);
        let chunk = flat.iter().map(|t| t.narrow(0, start, len)).collect::<candle_core::Result<Vec<_>>>()?;
        for (part, out) in parts.iter_mut().zip(f(std::array::from_fn(|i| &chunk[i]))?) {
            part.push(out);
        }
    }
    let joined = parts
        .iter()
        .map(|p| {
            let joined = Tensor::cat(p, 0)?;
            let mut shape = dims[..lead].to_vec();
            shape.extend_from_slice(&joined.dims()[1..]);
            joined.reshape(shape)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(joined.try_into().unwrap_or_else(|_| unreachable!("one joined tensor per output")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Chunks of four, then two, of six (batch × head) rows give the same values and gradients
    /// as one pass over all rows.
    #[test]
    fn chunks_give_the_values_and_gradients_of_one_pass() {
        let dev = Device::Cpu;
        let values = |shape: &[usize], seed: u64| {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = crate::ops::cpu::seeded_values(n, seed).into_iter().map(f64::from).collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (values(&[3, 2, 6, 4], 1), values(&[3, 2, 5, 4], 2), values(&[3, 2, 5, 4], 3));
        let probe = values(&[3, 2, 6, 4], 4);
        let spec = CausalMask { rep: 2, t: 3, offset: 2, window: None };
        let four_rows = 4 * 6 * 5 * 8;
        let run = |chunk_bytes: usize, train: bool| {
            let out = attention_in_chunks(
                [q.as_tensor(), k.as_tensor(), v.as_tensor()],
                0.5,
                Some(&spec),
                train,
                chunk_bytes,
            )
            .unwrap();
            assert_eq!(out.dims(), &[3, 2, 6, 4]);
            let grads = (&out * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let mut all = flat(&out);
            if train {
                for x in [&q, &k, &v] {
                    all.extend(flat(grads.get(x.as_tensor()).unwrap()));
                }
            }
            all
        };
        for train in [true, false] {
            let (whole, chunks) = (run(usize::MAX, train), run(four_rows, train));
            let worst = whole.iter().zip(&chunks).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
            assert!(worst < 1e-12, "train {train}: {worst}");
        }
    }
}
