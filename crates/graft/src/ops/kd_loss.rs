//! Logit distillation losses, fused with the student's LM head and the teacher's, in row chunks.
//!
//! Notation, per supervised position: `z_s = h_s W_sᵀ` the student's logits, `z_t = h_t W_tᵀ` the
//! teacher's, `T` the temperature, `q = softmax(z_s / T)` the student's distribution and
//! `p = softmax(z_t / T)` the teacher's. The divergences ([`Divergence`]):
//!
//! - forward KL: `KL(p‖q) = Σ p (log p − log q)` (mode-covering; torchtune's KD loss);
//! - reverse KL: `KL(q‖p) = Σ q (log q − log p)` (mode-seeking);
//! - generalized JSD, exactly as TRL's `GKDTrainer.generalized_jsd_loss`: with the mixture
//!   `m = β p + (1 − β) q`, `JSD_β = β KL(p‖m) + (1 − β) KL(q‖m)` for `0 < β < 1`; TRL defines the
//!   ends separately, `β = 0` as forward KL `KL(p‖q)` and `β = 1` as reverse KL `KL(q‖p)` (the
//!   mixture formula itself vanishes at both ends), and so does graft;
//! - skew KL (DistiLLM): `SKL_α = KL(p ‖ α p + (1 − α) q)`, `α = 0` is forward KL;
//! - skew reverse KL (DistiLLM): `SRKL_α = KL(q ‖ (1 − α) p + α q)`, `α = 0` is reverse KL;
//! - Universal Logit Distillation (Boizard et al. 2024), the one that works across vocabularies:
//!   `ULD_k = Σ_{i<k} |q↓_i − p↓_i|`, `q↓` and `p↓` being `q` and `p` sorted in decreasing order,
//!   each cut to its `k` largest and the shorter zero-padded ([`uld`](super::uld)).
//!
//! The distillation term of a position is `kd = T² · D(p, q)` (the `T²` keeps its gradient's scale
//! independent of `T`, as in Hinton et al.), mixed with the ordinary next-token cross-entropy `ce`
//! (at temperature 1) as torchtune's `kd_ratio` does: `loss = (1 − kd_ratio) · ce + kd_ratio · kd`.
//! Only supervised positions count (`mask`).
//!
//! Memory: as in [`lm_head_nll`](super::lm_head_nll), neither the student's nor the teacher's
//! `[n × V]` logits ever exist whole. The forward computes both per chunk of
//! [`LM_HEAD_CHUNK`] rows and, for a frozen student head, the hidden-state gradient of those rows
//! (`[n × h]`); a trainable head (full fine-tuning) recomputes both logits per chunk in backward.
//! The teacher's hidden states arrive detached (computed without a graph) and get no gradient.
//!
//! Gradients: every divergence is written through `u = q ⊙ ∂D/∂q`, and
//! `∂D/∂z_s = (u − q Σ u) / T` (the softmax Jacobian), so `∂(T² D)/∂z_s = T (u − q Σ u)`:
//! forward KL `u = −p`; reverse KL `u = q (log q − log p + 1)`; JSD `u = (1 − β) q (log q − log m)`;
//! skew KL `u = −(1 − α) p q / m`; skew reverse KL `u = q (log q − log m + 1) − α q² / m`;
//! ULD `u_{π(i)} = q↓_i sign(q↓_i − p↓_i)` for the student's `k` largest (`π` its sort
//! permutation, held fixed) and 0 elsewhere.

use super::attach::{attach1, attach2};
use super::frozen_linear::FrozenWeight;
use super::lm_head_loss::{ce_dlogits, ce_rows, head_grads, lm_head_nll, work_dtype, LM_HEAD_CHUNK};
use super::uld::uld_rows;
use candle_core::{Tensor, D};

/// The divergence between the teacher's distribution `p` and the student's `q` (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    /// `KL(p‖q)`.
    ForwardKl,
    /// `KL(q‖p)`.
    ReverseKl,
    /// TRL's generalized Jensen–Shannon divergence with `β ∈ [0, 1]` (0 = forward KL,
    /// 1 = reverse KL).
    Jsd {
        /// Weight of the teacher in the mixture.
        beta: f64,
    },
    /// DistiLLM's skew KL `KL(p ‖ α p + (1 − α) q)`, `α ∈ [0, 1)`.
    SkewKl {
        /// Share of the teacher in the mixture.
        alpha: f64,
    },
    /// DistiLLM's skew reverse KL `KL(q ‖ (1 − α) p + α q)`, `α ∈ [0, 1)`.
    SkewReverseKl {
        /// Share of the student in the mixture.
        alpha: f64,
    },
    /// Universal Logit Distillation: the L1 distance between the two distributions sorted in
    /// decreasing order and cut to their `top_k` largest probabilities. The only divergence here
    /// that compares distributions over different vocabularies (it needs no token mapping).
    Uld {
        /// How many of the largest probabilities of each side are compared (≥ 1).
        top_k: usize,
    },
}

impl Divergence {
    /// Whether the teacher's and the student's vocabularies may differ.
    pub fn cross_vocabulary(&self) -> bool {
        matches!(self, Divergence::Uld { .. })
    }
}

/// What a distillation loss computes: the divergence, its temperature and its share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KdSpec {
    /// The divergence `D(p, q)`.
    pub divergence: Divergence,
    /// Temperature `T > 0` applied to both distributions (the term is multiplied by `T²`).
    pub temperature: f64,
    /// Share of the distillation term, in [0, 1]: `loss = (1 − r) ce + r kd`.
    pub kd_ratio: f64,
}

/// Per-row results of [`lm_head_kd`], each `[n]` and already multiplied by the mask.
pub struct KdRows {
    /// `(1 − kd_ratio) · ce + kd_ratio · kd`, with a graph back to the student's hidden states
    /// (and its head, when that trains).
    pub loss: Tensor,
    /// The next-token cross-entropy (no graph).
    pub ce: Tensor,
    /// The distillation term `T² · D(p, q)` (no graph).
    pub kd: Tensor,
}

/// Refuses a temperature or `kd_ratio` out of range.
pub(super) fn check_spec(spec: &KdSpec) -> candle_core::Result<()> {
    if !(spec.temperature.is_finite() && spec.temperature > 0.0 && (0.0..=1.0).contains(&spec.kd_ratio)) {
        candle_core::bail!("lm_head_kd: temperature {} / kd_ratio {} out of range", spec.temperature, spec.kd_ratio);
    }
    if spec.divergence == (Divergence::Uld { top_k: 0 }) {
        candle_core::bail!("lm_head_kd: the ULD loss needs top_k ≥ 1");
    }
    Ok(())
}

/// `log(wa · eᵃ + wb · eᵇ)` elementwise, for weights `wa, wb ≥ 0` that are not both 0.
fn log_mix(a: &Tensor, wa: f64, b: &Tensor, wb: f64) -> candle_core::Result<Tensor> {
    if wa == 0.0 {
        return b + wb.ln();
    }
    if wb == 0.0 {
        return a + wa.ln();
    }
    let (a, b) = ((a + wa.ln())?, (b + wb.ln())?);
    let max = a.maximum(&b)?;
    ((a - &max)?.exp()? + (b - &max)?.exp()?)?.log()? + max
}

/// `Σ_v x` over the vocabulary: `[len, V] → [len]`.
fn row_sum(x: &Tensor) -> candle_core::Result<Tensor> {
    x.sum(D::Minus1)
}

/// The divergence `D(p, q)` per row `[len]` of student logits `zs` and teacher logits `zt`
/// (`[len, V]`, work dtype) at temperature `t`; with `want_u`, also `u = q ⊙ ∂D/∂q` `[len, V]`
/// and `q` (module docs).
fn divergence_rows(
    zs: &Tensor,
    zt: &Tensor,
    divergence: Divergence,
    t: f64,
    want_u: bool,
) -> candle_core::Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let scale = |z: &Tensor| if t == 1.0 { Ok(z.clone()) } else { z / t };
    let lq = candle_nn::ops::log_softmax(&scale(zs)?, D::Minus1)?;
    let lp = candle_nn::ops::log_softmax(&scale(zt)?, D::Minus1)?;
    let (q, p) = (lq.exp()?, lp.exp()?);
    let divergence = match divergence {
        Divergence::Jsd { beta: 0.0 } => Divergence::ForwardKl,
        Divergence::Jsd { beta: 1.0 } => Divergence::ReverseKl,
        d => d,
    };
    let (d, u) = match divergence {
        Divergence::Uld { top_k } => uld_rows(&q, &p, top_k, want_u)?,
        Divergence::ForwardKl => {
            let d = row_sum(&(&p * (&lp - &lq)?)?)?;
            (d, want_u.then(|| p.neg()).transpose()?)
        }
        Divergence::ReverseKl => {
            let log_ratio = (&lq - &lp)?;
            let d = row_sum(&(&q * &log_ratio)?)?;
            (d, want_u.then(|| &q * (log_ratio + 1.0)?).transpose()?)
        }
        Divergence::Jsd { beta } => {
            let lm = log_mix(&lp, beta, &lq, 1.0 - beta)?;
            let (to_p, to_q) = (row_sum(&(&p * (&lp - &lm)?)?)?, row_sum(&(&q * (&lq - &lm)?)?)?);
            let d = ((to_p * beta)? + (to_q * (1.0 - beta))?)?;
            (d, want_u.then(|| (&q * (&lq - &lm)?)? * (1.0 - beta)).transpose()?)
        }
        Divergence::SkewKl { alpha } => {
            let lm = log_mix(&lp, alpha, &lq, 1.0 - alpha)?;
            let d = row_sum(&(&p * (&lp - &lm)?)?)?;
            let u = want_u.then(|| ((&lp + &lq)? - &lm)?.exp()? * (alpha - 1.0)).transpose()?;
            (d, u)
        }
        Divergence::SkewReverseKl { alpha } => {
            let lm = log_mix(&lp, 1.0 - alpha, &lq, alpha)?;
            let log_ratio = (&lq - &lm)?;
            let d = row_sum(&(&q * &log_ratio)?)?;
            let u = if want_u {
                let first = (&q * (log_ratio + 1.0)?)?;
                Some((first - (((&lq * 2.0)? - &lm)?.exp()? * alpha)?)?)
            } else {
                None
            };
            (d, u)
        }
    };
    Ok((d, u.map(|u| (u, q))))
}

/// `∂(T² D)/∂z_s = T (u − q Σ u)` from [`divergence_rows`]' `u` and `q`.
fn kd_dlogits(u: &Tensor, q: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    let total = u.sum_keepdim(D::Minus1)?;
    (u - q.broadcast_mul(&total)?)? * t
}

/// One chunk's per-row `loss`, `ce` and `kd`, and when asked the gradient of `loss` (for an
/// output gradient of 1, times the mask) with respect to the student logits.
struct ChunkRows {
    loss: Tensor,
    ce: Tensor,
    kd: Tensor,
    dlogits: Option<Tensor>,
}

/// The per-row losses of a chunk of student logits `zs` and teacher logits `zt` (work dtype);
/// with `want_d`, the loss gradient with respect to `zs` for the output gradient 1 (times the mask).
fn chunk_rows(
    zs: &Tensor,
    zt: &Tensor,
    targets: &Tensor,
    (mask, kd_mask): (&Tensor, &Tensor),
    spec: &KdSpec,
    want_d: bool,
) -> candle_core::Result<ChunkRows> {
    let (ce, dce) = ce_rows(zs, targets, mask, want_d)?;
    let (div, u) = divergence_rows(zs, zt, spec.divergence, spec.temperature, want_d && spec.kd_ratio > 0.0)?;
    let t2 = spec.temperature * spec.temperature;
    let kd = ((div * t2)? * kd_mask)?;
    let r = spec.kd_ratio;
    // kd_ratio = 0 leaves the cross-entropy and its gradient exactly as plain training has them.
    let loss = if r == 0.0 { ce.clone() } else { ((&ce * (1.0 - r))? + (&kd * r)?)? };
    let dlogits = match (dce, u) {
        (Some(dce), Some((u, q))) => {
            let dkd = kd_dlogits(&u, &q, spec.temperature)?.broadcast_mul(&(kd_mask * r)?.unsqueeze(1)?)?;
            Some(((dce * (1.0 - r))? + dkd)?)
        }
        (dce, _) => dce,
    };
    Ok(ChunkRows { loss, ce, kd, dlogits })
}

/// The distillation loss of `n` supervised positions: student hidden states `hidden [n, h_s]`
/// through the student head `weight [V, h_s]`, teacher hidden states `teacher_hidden [n, h_t]`
/// (no gradient) through the teacher head `teacher_weight [V, h_t]` (`[V_t, h_t]` of another
/// vocabulary size for [`Divergence::Uld`], row `i` being the teacher's position aligned with the
/// student's row `i`), next-token `targets [n]`
/// (u32) and `mask [n]` (1 = counts); see the module docs for the formulas.
///
/// A dense student `weight` that is a trainable variable (full fine-tuning with tied embeddings)
/// also receives its gradient; a frozen or quantized one does not.
pub fn lm_head_kd(
    hidden: &Tensor,
    weight: &FrozenWeight,
    teacher_hidden: &Tensor,
    teacher_weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
    spec: &KdSpec,
) -> candle_core::Result<KdRows> {
    lm_head_kd_masked(hidden, weight, teacher_hidden, teacher_weight, targets, mask, None, spec)
}

/// [`lm_head_kd`] whose distillation term counts only where `kd_mask [n]` (1 = counts) is
/// non-zero, while the cross-entropy counts wherever `mask` does; `None` is `mask` itself. For
/// cross-tokenizer distillation, where only some of the student's supervised positions have a
/// teacher position paired with them: elsewhere the loss is `(1 − kd_ratio) · ce` and the
/// teacher row is ignored.
#[allow(clippy::too_many_arguments)]
pub fn lm_head_kd_masked(
    hidden: &Tensor,
    weight: &FrozenWeight,
    teacher_hidden: &Tensor,
    teacher_weight: &FrozenWeight,
    targets: &Tensor,
    mask: &Tensor,
    kd_mask: Option<&Tensor>,
    spec: &KdSpec,
) -> candle_core::Result<KdRows> {
    let (n, h) = hidden.dims2()?;
    let (vocab, inp) = weight.dims();
    let (t_vocab, t_inp) = teacher_weight.dims();
    let (t_n, t_h) = teacher_hidden.dims2()?;
    let vocab_ok = vocab == t_vocab || spec.divergence.cross_vocabulary();
    let kd_mask_ok = match kd_mask {
        Some(m) => m.dims1()? == n,
        None => true,
    };
    if h != inp || t_h != t_inp || t_n != n || !vocab_ok || targets.dims1()? != n || mask.dims1()? != n || !kd_mask_ok {
        candle_core::bail!(
            "lm_head_kd: hidden {:?}, head {:?}, teacher hidden {:?}, teacher head {:?}, targets {:?}, mask {:?} \
             do not agree",
            hidden.dims(),
            weight.dims(),
            teacher_hidden.dims(),
            teacher_weight.dims(),
            targets.dims(),
            mask.dims()
        );
    }
    check_spec(spec)?;
    let work = work_dtype(hidden.dtype());
    let th = teacher_hidden.detach();
    let tw = teacher_weight.dense(th.dtype())?.detach();
    let teacher_logits = move |start: usize, len: usize, _student: &Tensor| -> candle_core::Result<Tensor> {
        th.narrow(0, start, len)?.matmul(&tw.t()?)?.to_dtype(work)
    };
    lm_head_kd_from(hidden, weight, teacher_logits, targets, (mask, kd_mask), spec)
}

/// Rows `start..start + len` of the teacher's logits (work dtype, `[len, V]`), computed on demand
/// so that they never exist whole, given the student's logits of the same rows (work dtype, before
/// the temperature; detached). Any function whose `log_softmax(z / T)` is the teacher's
/// distribution at temperature `T` will do (the cached sparse teacher supplies `T · log p̂`, whose
/// tail follows the student's: see `kd_sparse`).
pub(super) trait TeacherRows:
    Fn(usize, usize, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static
{
}
impl<F: Fn(usize, usize, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static> TeacherRows for F {}

/// [`lm_head_kd`] with the teacher's logits from `teacher_logits` (shapes already checked by the
/// caller); the distillation term counts where the second mask does (`None`: the first).
pub(super) fn lm_head_kd_from(
    hidden: &Tensor,
    weight: &FrozenWeight,
    teacher_logits: impl TeacherRows,
    targets: &Tensor,
    (mask, kd_mask): (&Tensor, Option<&Tensor>),
    spec: &KdSpec,
) -> candle_core::Result<KdRows> {
    let n = hidden.dims2()?.0;
    let work = work_dtype(hidden.dtype());
    let mask = mask.to_dtype(work)?.detach();
    let kd_mask = match kd_mask {
        Some(m) => m.to_dtype(work)?.detach(),
        None => mask.clone(),
    };
    let targets = targets.detach();
    let hd = hidden.detach();
    let trainable = match weight {
        FrozenWeight::Dense(w) if w.is_variable() || w.track_op() => Some(w.clone()),
        _ => None,
    };
    // kd_ratio = 0 is plain training to the bit: the loss and its gradient are `lm_head_nll`'s
    // (which reads the head in vocabulary slices), and the KD term below is only measured.
    let plain = if spec.kd_ratio == 0.0 { Some(lm_head_nll(hidden, weight, &targets, &mask)?) } else { None };
    // As in `lm_head_nll`: with a frozen head each row's gradient is its own, computed here from
    // the logits at hand; a trainable head recomputes both logits in backward for its gradient.
    let want_dh = plain.is_none() && trainable.is_none() && hidden.track_op();
    let w = weight.dense(hidden.dtype())?.detach();
    let chunks = n.div_ceil(LM_HEAD_CHUNK);
    let (mut loss, mut ce, mut kd, mut dh) = (Vec::with_capacity(chunks), Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(LM_HEAD_CHUNK) {
        let len = LM_HEAD_CHUNK.min(n - start);
        let h = hd.narrow(0, start, len)?;
        let zs = h.matmul(&w.t()?)?.to_dtype(work)?;
        let zt = teacher_logits(start, len, &zs)?;
        let masks = (&mask.narrow(0, start, len)?, &kd_mask.narrow(0, start, len)?);
        let rows = chunk_rows(&zs, &zt, &targets.narrow(0, start, len)?, masks, spec, want_dh)?;
        loss.push(rows.loss);
        ce.push(rows.ce);
        kd.push(rows.kd);
        if let Some(d) = rows.dlogits {
            dh.push(d.to_dtype(hidden.dtype())?.matmul(&w)?);
        }
    }
    let kd = Tensor::cat(&kd, 0)?;
    if let Some(loss) = plain {
        return Ok(KdRows { ce: loss.detach(), loss, kd });
    }
    let (value, ce) = (Tensor::cat(&loss, 0)?, Tensor::cat(&ce, 0)?);
    let spec = *spec;
    let loss = match trainable {
        Some(w) => attach2(
            "lm-head-kd",
            hidden,
            &w,
            value,
            Box::new(move |h, w, _, g| {
                let g = g.to_dtype(work)?;
                let (coef, kd_coef) = ((&g * &mask)?, (&g * &kd_mask)?);
                let (dh, dw) = head_grads(h, w, true, |start, len, zs| {
                    let (targets, coef) = (targets.narrow(0, start, len)?, coef.narrow(0, start, len)?);
                    let kd_coef = kd_coef.narrow(0, start, len)?;
                    let dce = ce_dlogits(zs, &targets, &coef)?;
                    let (_, u) =
                        divergence_rows(zs, &teacher_logits(start, len, zs)?, spec.divergence, spec.temperature, true)?;
                    let Some((u, q)) = u else { candle_core::bail!("lm_head_kd: no divergence gradient") };
                    let dkd = kd_dlogits(&u, &q, spec.temperature)?
                        .broadcast_mul(&(kd_coef * spec.kd_ratio)?.unsqueeze(1)?)?;
                    (dce * (1.0 - spec.kd_ratio))? + dkd
                })?;
                Ok((Some(dh), dw))
            }),
        )?,
        None if want_dh => {
            let dh_unit = Tensor::cat(&dh, 0)?;
            attach1(
                "lm-head-kd",
                hidden,
                value,
                Box::new(move |_, _, g| Ok(Some(dh_unit.broadcast_mul(&g.to_dtype(dh_unit.dtype())?.unsqueeze(1)?)?))),
            )?
        }
        // Not differentiated (evaluation): no graph node needed.
        None => value,
    };
    Ok(KdRows { loss, ce, kd })
}

/// The divergence `D(p, q)` per row of whole student and teacher logits `[n, V]` at temperature
/// `t`, without chunking or the `T²` factor: the reference the fused op is tested against, and
/// what a caller holding small logits already can use directly.
pub fn divergence(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    d: Divergence,
    t: f64,
) -> candle_core::Result<Tensor> {
    let work = work_dtype(student_logits.dtype());
    let (zs, zt) = (student_logits.to_dtype(work)?, teacher_logits.to_dtype(work)?);
    Ok(divergence_rows(&zs, &zt, d, t, false)?.0)
}
