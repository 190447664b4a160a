//! Feature-level domain adaptation: losses that pull the features of a labelled source domain
//! and an unlabelled target domain together, for any backbone whose features come as a
//! `[n, d]` tensor (image or text encoders alike), and label-free scores for choosing among
//! adapted models.
//!
//! - DANN (Ganin et al., 2016): a domain classifier on gradient-reversed features
//!   ([`crate::ops::grad_reverse`]), its loss [`domain_loss`], and the usual λ schedule
//!   [`dann_lambda`].
//! - Deep CORAL (Sun & Saenko, 2016): [`coral_loss`], the distance between the two domains'
//!   feature covariances.
//! - Multi-kernel MMD (Long et al., 2015, "DAN"): [`mmd2`], the squared maximum mean
//!   discrepancy under a sum of Gaussian kernels.
//! - Model selection without target labels: [`mean_entropy`] and [`information_maximization`]
//!   of the target predictions.

use crate::{GraftError, Result};
use candle_core::{DType, Tensor, D};

/// Ganin et al.'s schedule of the reversal strength: `2 / (1 + exp(−γ·p)) − 1` at training
/// progress `p` ∈ [0, 1] (γ = 10 in the paper), rising from 0 so the domain classifier's noisy
/// early gradients do not disturb the features.
pub fn dann_lambda(progress: f64, gamma: f64) -> f64 {
    2.0 / (1.0 + (-gamma * progress.clamp(0.0, 1.0)).exp()) - 1.0
}

/// Binary cross-entropy of a domain classifier, summed: `source_logits` `[n]` should say
/// "source" (label 1), `target_logits` `[m]` "target" (label 0). Returns the sum and `n + m`.
pub fn domain_loss(source_logits: &Tensor, target_logits: &Tensor) -> Result<(Tensor, usize)> {
    // −log σ(z) = softplus(−z), −log(1 − σ(z)) = softplus(z); softplus(z) = max(z, 0) + log(1 + e^−|z|).
    let softplus = |z: &Tensor| -> Result<Tensor> { Ok((z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?) };
    let (n, m) = (source_logits.elem_count(), target_logits.elem_count());
    let sum = (softplus(&source_logits.flatten_all()?.neg()?)?.sum_all()?
        + softplus(&target_logits.flatten_all()?)?.sum_all()?)?;
    Ok((sum, n + m))
}

/// Checks two feature matrices `[n, d]` and `[m, d]` (at least `min_rows` rows each).
fn check_pair(source: &Tensor, target: &Tensor, min_rows: usize, what: &str) -> Result<(usize, usize, usize)> {
    let (n, d) = source.dims2()?;
    let (m, dt) = target.dims2()?;
    if d != dt {
        return Err(GraftError::Input(format!("{what}: source features have {d} dimensions, target features {dt}")));
    }
    if n < min_rows || m < min_rows {
        return Err(GraftError::Input(format!(
            "{what}: needs at least {min_rows} source and {min_rows} target rows, got {n} and {m}"
        )));
    }
    Ok((n, m, d))
}

/// Unbiased covariance `[d, d]` of the rows of `x` `[n, d]`.
fn covariance(x: &Tensor, n: usize) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    Ok((centred.t()?.matmul(&centred)? / (n - 1) as f64)?)
}

/// Deep CORAL: `‖C_S − C_T‖²_F / (4 d²)` with `C` the unbiased feature covariance of each
/// domain's batch.
pub fn coral_loss(source: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (n, m, d) = check_pair(source, target, 2, "CORAL")?;
    let diff = (covariance(source, n)? - covariance(target, m)?)?;
    Ok((diff.sqr()?.sum_all()? / (4 * d * d) as f64)?)
}

/// The bandwidths `σ²` of the Gaussian kernels `exp(−‖x − y‖² / (2σ²))` that [`mmd2`] sums.
#[derive(Debug, Clone, PartialEq)]
pub enum Bandwidths {
    /// These `σ²`.
    Fixed(Vec<f64>),
    /// DAN's choice: the mean squared distance between all pairs of the batch (a constant: no
    /// gradient flows through it) times `mul^k` for `k = −⌊count/2⌋ ..` (`count` kernels).
    MeanDistance {
        /// Ratio between neighbouring bandwidths (2 in DAN).
        mul: f64,
        /// Number of kernels (5 in DAN).
        count: usize,
    },
}

impl Default for Bandwidths {
    /// DAN's five kernels, ratio 2.
    fn default() -> Self {
        Self::MeanDistance { mul: 2.0, count: 5 }
    }
}

/// Squared multi-kernel MMD (the biased estimator): `mean k(s, s′) + mean k(t, t′) − 2 mean
/// k(s, t)` over all pairs, `k` the sum of Gaussian kernels of `bandwidths`.
pub fn mmd2(source: &Tensor, target: &Tensor, bandwidths: &Bandwidths) -> Result<Tensor> {
    let (n, m, _) = check_pair(source, target, 1, "MMD")?;
    let z = Tensor::cat(&[source, target], 0)?;
    let sq = z.sqr()?.sum_keepdim(1)?;
    let dist = sq.broadcast_add(&sq.t()?)?.broadcast_sub(&(z.matmul(&z.t()?)? * 2.0)?)?.relu()?;
    let sigmas = match bandwidths {
        Bandwidths::Fixed(s) => s.clone(),
        Bandwidths::MeanDistance { mul, count } => {
            let total = n + m;
            let mean =
                dist.detach().sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / (total * total - total) as f64;
            if mean == 0.0 {
                // Every feature of both batches is the same point (collapsed features): each kernel
                // is 1 everywhere whatever its bandwidth, so the discrepancy is exactly zero.
                return Ok((z.sum_all()? * 0.0)?);
            }
            let lowest = -((*count / 2) as i32);
            (0..*count as i32).map(|k| mean * mul.powi(lowest + k)).collect()
        }
    };
    if sigmas.is_empty() || sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(GraftError::Input(format!("MMD: bandwidths must be positive and finite, got {sigmas:?}")));
    }
    let mut kernel: Option<Tensor> = None;
    for s in sigmas {
        let k = (dist.clone() * (-0.5 / s))?.exp()?;
        kernel = Some(match kernel {
            None => k,
            Some(acc) => (acc + k)?,
        });
    }
    let kernel = kernel.expect("at least one bandwidth");
    let ss = kernel.narrow(0, 0, n)?.narrow(1, 0, n)?.mean_all()?;
    let tt = kernel.narrow(0, n, m)?.narrow(1, n, m)?.mean_all()?;
    let st = kernel.narrow(0, 0, n)?.narrow(1, n, m)?.mean_all()?;
    Ok(((ss + tt)? - (st * 2.0)?)?)
}

/// Row-wise softmax probabilities and their entropies (nats) of `logits` `[n, c]`, in f64.
fn probs_and_entropy(logits: &Tensor) -> Result<(Tensor, Tensor)> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64)?, D::Minus1)?;
    let p = logp.exp()?;
    let h = (&p * &logp)?.sum(D::Minus1)?.neg()?;
    Ok((p, h))
}

/// Mean prediction entropy (nats) of target `logits` `[n, c]`: lower means more confident.
pub fn mean_entropy(logits: &Tensor) -> Result<f64> {
    Ok(probs_and_entropy(logits)?.1.mean_all()?.to_scalar::<f64>()?)
}

/// Information maximisation score of target `logits` `[n, c]`: the entropy of the mean
/// prediction minus the mean entropy — high when each prediction is confident and the classes
/// are used evenly (a model that maps everything to one class scores 0).
pub fn information_maximization(logits: &Tensor) -> Result<f64> {
    let (p, h) = probs_and_entropy(logits)?;
    let mean = p.mean(0)?;
    let marginal = (&mean * mean.clamp(1e-300, 1.0)?.log()?)?.sum_all()?.neg()?.to_scalar::<f64>()?;
    Ok(marginal - h.mean_all()?.to_scalar::<f64>()?)
}
