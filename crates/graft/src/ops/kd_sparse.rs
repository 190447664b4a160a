//! Distillation against a sparse (cached) teacher: the teacher's top-`k` log-probabilities at
//! temperature `T` per supervised position plus one remainder mass, instead of its hidden states
//! and LM head.
//!
//! The remainder is one bucket. For a position with top-`k` ids `K`, their log-probabilities
//! `log p_i` and the remainder `R = Σ_{v∉K} p_v`, the divergence is taken between the two
//! distributions coarsened to `k + 1` outcomes — the `k` ids and "any other id":
//! `p̃ = (p_K, R)` and `q̃ = (q_K, Q)`, `Q = Σ_{v∉K} q_v` the student's own remainder. That is what
//! a top-`k` cache knows, and nothing it does not: how the teacher's remainder is spread is unknown,
//! so no shape is imposed on the student's tail. For forward KL it is
//! `Σ_{i∈K} p_i log(p_i / q_i) + R log(R / Q)`, a lower bound of the full `KL(p‖q)` that tightens as
//! `k` grows and is exact at `k = V`; a student equal to the teacher scores 0 at every `k`.
//!
//! It is computed through the dense op with the teacher
//!
//! - `p̂_i = p_i` for `i ∈ K`, and
//! - `p̂_v = R · q_v / Q` for every other id `v` (the remainder spread like the student's tail),
//!
//! held constant in the backward. Every divergence of [`Divergence`](super::Divergence) but ULD
//! is an f-divergence `Σ_v q_v f(p̂_v / q_v)`; the ratio `p̂_v / q_v = R / Q` is the same over the
//! whole tail, so the tail sums to `Q f(R / Q)` — the coarsened divergence exactly — and its
//! derivative in any `q_v` of the tail, `f(R/Q) − (R/Q) f'(R/Q)`, is what the dense gradient
//! with `p̂` held constant gives: the hand-written gradients apply unchanged (tested against
//! finite differences of the coarsened loss). `k = V` is the full teacher exactly.

use super::frozen_linear::FrozenWeight;
use super::kd_loss::{check_spec, lm_head_kd_from, KdRows, KdSpec};
use super::lm_head_loss::{work_dtype, LM_HEAD_CHUNK};
use candle_core::{Tensor, D};

/// The floor `log R` is clamped to: a remainder of exactly 0 (the top-`k` hold everything) would
/// otherwise be `−∞` and turn `0 · (−∞)` into NaN in the divergences.
const REST_FLOOR: f64 = -1e4;

/// The teacher's distribution at `n` positions, kept sparse.
#[derive(Debug, Clone)]
pub struct SparseTeacher {
    /// Top-`k` token ids `[n, k]` (u32), most probable first.
    pub ids: Tensor,
    /// Their log-probabilities at the temperature `[n, k]`.
    pub log_probs: Tensor,
    /// `log` of the probability of all other ids `[n]`.
    pub rest: Tensor,
}

impl SparseTeacher {
    /// Positions `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        Ok(Self {
            ids: self.ids.narrow(0, start, len)?,
            log_probs: self.log_probs.narrow(0, start, len)?,
            rest: self.rest.narrow(0, start, len)?,
        })
    }

    /// `[n, k]`.
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        self.ids.dims2()
    }

    /// The teacher log-probabilities `log p̂` `[n, V]` the divergences see (module docs): the
    /// cached top-`k` values, and the remainder spread like the student's tail, given the
    /// student's logits `student_logits [n, V]` (before the temperature `t`). In the dtype of
    /// `student_logits`.
    pub fn log_probs_given(&self, student_logits: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        let (n, k) = self.dims()?;
        let (s_n, vocab) = student_logits.dims2()?;
        if k > vocab || s_n != n {
            candle_core::bail!(
                "sparse teacher: {n} positions of {k} ids against student logits {:?}",
                student_logits.dims()
            );
        }
        let (dev, dtype) = (student_logits.device(), student_logits.dtype());
        let ids = self.ids.contiguous()?;
        let zeros = Tensor::zeros((n, vocab), dtype, dev)?;
        let values = zeros.scatter_add(&ids, &self.log_probs.to_dtype(dtype)?.contiguous()?, 1)?;
        if k == vocab {
            return Ok(values);
        }
        let in_top = zeros.scatter_add(&ids, &Tensor::ones((n, k), dtype, dev)?, 1)?.ge(0.5)?;
        let log_q = candle_nn::ops::log_softmax(&(student_logits.detach() / t)?, D::Minus1)?;
        // log Q: the student's tail mass, as a log-sum-exp over the ids outside the top k.
        let neg_inf = Tensor::full(f64::NEG_INFINITY, (n, vocab), dev)?.to_dtype(dtype)?;
        let tail = in_top.where_cond(&neg_inf, &log_q)?;
        let max = tail.max_keepdim(D::Minus1)?;
        let log_tail = (tail.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        let shift = (self.rest.to_dtype(dtype)?.maximum(REST_FLOOR)?.unsqueeze(1)? - log_tail)?;
        in_top.where_cond(&values, &log_q.broadcast_add(&shift)?)
    }
}

/// The teacher's top-`k` log-probabilities at temperature `t` from its hidden states
/// `[n, h]` and LM head `[V, h]`, computed in chunks of [`LM_HEAD_CHUNK`] rows (what a teacher
/// cache stores).
pub fn teacher_top_k(
    teacher_hidden: &Tensor,
    teacher_weight: &FrozenWeight,
    k: usize,
    t: f64,
) -> candle_core::Result<SparseTeacher> {
    let (n, _) = teacher_hidden.dims2()?;
    let (vocab, _) = teacher_weight.dims();
    if k == 0 || k > vocab || !(t.is_finite() && t > 0.0) {
        candle_core::bail!("teacher_top_k: k = {k} must be in 1..={vocab} and t = {t} positive");
    }
    let work = work_dtype(teacher_hidden.dtype());
    let th = teacher_hidden.detach();
    let tw = teacher_weight.dense(th.dtype())?.detach();
    let (mut ids, mut lps, mut rests) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(LM_HEAD_CHUNK) {
        let len = LM_HEAD_CHUNK.min(n - start);
        let z = (th.narrow(0, start, len)?.matmul(&tw.t()?)?.to_dtype(work)? / t)?;
        let lp = candle_nn::ops::log_softmax(&z, D::Minus1)?;
        let top = lp.arg_sort_last_dim(false)?.narrow(1, 0, k)?.contiguous()?;
        let top_lp = lp.gather(&top, 1)?;
        let rest = if k == vocab {
            Tensor::full(REST_FLOOR, len, lp.device())?.to_dtype(work)?
        } else {
            // log Σ over the ids outside the top k, without the cancellation of log(1 − Σ top).
            let ones = Tensor::ones((len, k), work, lp.device())?;
            let in_top = Tensor::zeros((len, vocab), work, lp.device())?.scatter_add(&top, &ones, 1)?.ge(0.5)?;
            let neg_inf = Tensor::full(f64::NEG_INFINITY, (len, vocab), lp.device())?.to_dtype(work)?;
            let others = in_top.where_cond(&neg_inf, &lp)?;
            let max = others.max_keepdim(D::Minus1)?;
            (others.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?.squeeze(1)?
        };
        ids.push(top);
        lps.push(top_lp);
        rests.push(rest);
    }
    Ok(SparseTeacher { ids: Tensor::cat(&ids, 0)?, log_probs: Tensor::cat(&lps, 0)?, rest: Tensor::cat(&rests, 0)? })
}

/// [`lm_head_kd`](super::lm_head_kd) with the teacher given as a [`SparseTeacher`] of the same
/// `n` positions, taken at `spec.temperature` (module docs for the reconstruction). The teacher's
/// forward never runs; the student's chunked loss and custom backward are the dense op's.
pub fn lm_head_kd_sparse(
    hidden: &Tensor,
    weight: &FrozenWeight,
    teacher: &SparseTeacher,
    targets: &Tensor,
    mask: &Tensor,
    spec: &KdSpec,
) -> candle_core::Result<KdRows> {
    let (n, h) = hidden.dims2()?;
    let (vocab, inp) = weight.dims();
    let (t_n, k) = teacher.dims()?;
    if h != inp || t_n != n || k > vocab || teacher.rest.dims1()? != n || targets.dims1()? != n || mask.dims1()? != n {
        candle_core::bail!(
            "lm_head_kd_sparse: hidden {:?}, head {:?}, teacher ids {:?}, targets {:?}, mask {:?} do not agree",
            hidden.dims(),
            weight.dims(),
            teacher.ids.dims(),
            targets.dims(),
            mask.dims()
        );
    }
    check_spec(spec)?;
    let work = work_dtype(hidden.dtype());
    let teacher = teacher.clone();
    let t = spec.temperature;
    // `log_softmax(T · log p̂ / T) = log p̂`: the dense loop sees the teacher with the student's
    // tail (module docs), rebuilt from the student's logits of the same rows.
    let teacher_logits = move |start: usize, len: usize, student: &Tensor| -> candle_core::Result<Tensor> {
        teacher.narrow(start, len)?.log_probs_given(&student.to_dtype(work)?, t)? * t
    };
    lm_head_kd_from(hidden, weight, teacher_logits, targets, (mask, None), spec)
}
