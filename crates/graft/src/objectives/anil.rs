//! ANIL (Raghu et al. 2020, "almost no inner loop") as an objective: one micro-batch is one
//! episode. The body — the [`Projection`] over frozen embeddings — is shared; only a linear
//! softmax head adapts to each episode, starting from a meta-learned initialisation `θ₀ = (W₀,
//! b₀)` (zero at the start) and taking `steps` gradient steps of rate `lr` on the support set's
//! mean cross-entropy. The meta-loss is the adapted head's summed cross-entropy on the queries.
//!
//! candle cannot differentiate through a gradient, so the inner loop is run with the head's
//! gradient in closed form and differentiated by hand. For logits `l = W z + b`,
//! `p = softmax(l)` and one-hot `y` over `n` rows:
//!
//! - gradient: `∇W = (P − Y)ᵀ Z / n`, `∇b = Σᵢ (pᵢ − yᵢ) / n`;
//! - Hessian-vector product with a direction `(V, c)`: `δlᵢ = V zᵢ + c`,
//!   `δpᵢ = pᵢ ⊙ δlᵢ − pᵢ (pᵢ · δlᵢ)`, `H(V, c) = (ΔPᵀ Z / n, Σᵢ δpᵢ / n)`;
//! - the gradient's dependence on the inputs: for an upstream `(U, u)`,
//!   `∂⟨(U, u), ∇⟩/∂Z = ((P − Y) U + ΔP W) / n` with `ΔP` the product above for `(U, u)`.
//!
//! With `θ_{t+1} = θ_t − α ∇_θ L_s(θ_t, Z_s)`, the exact meta-gradient runs backwards from
//! `v_T = ∇_θ L_q(θ_T)`: `v_t = v_{t+1} − α H_t v_{t+1}` (the Hessian-vector product at `θ_t`), and
//! the support embeddings collect `−α ∂⟨v_{t+1}, ∇⟩/∂Z_s` at every step; `v_0` is the gradient of
//! `θ₀`. First-order ANIL drops the second-order terms (`v_t = v_T`, no path through `Z_s`).
//! The body's gradient then flows from the embeddings' gradients by ordinary backward: the
//! loss handed to the trainer is a surrogate whose gradient is exactly this and whose value is
//! the query loss.

use crate::meta::evaluate::select_rows;
use crate::meta::{Episode, Projection};
use crate::objectives::protonet::count_correct;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

/// The inner loop of ANIL.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InnerLoop {
    /// Gradient steps on the support set during meta-training.
    pub steps: usize,
    /// Gradient steps on the support set when scoring meta-test episodes.
    pub eval_steps: usize,
    /// Inner learning rate α.
    pub lr: f64,
    /// Exact second-order meta-gradient (through the inner loop's Hessian-vector products);
    /// false: first-order ANIL.
    pub second_order: bool,
}

impl Default for InnerLoop {
    /// 5 steps (10 when scoring) at α = 0.5, second order.
    fn default() -> Self {
        Self { steps: 5, eval_steps: 10, lr: 0.5, second_order: true }
    }
}

impl InnerLoop {
    /// Refuses an inner loop that cannot adapt, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.eval_steps == 0 || !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(GraftError::Input(format!(
                "anil: steps and eval_steps must be at least 1 and lr positive, got {}, {} and {}",
                self.steps, self.eval_steps, self.lr
            )));
        }
        Ok(())
    }
}

/// A linear head's weights `[n_way, d]` and bias `[n_way]` (plain tensors).
#[derive(Debug, Clone)]
struct Head {
    w: Tensor,
    b: Tensor,
}

/// One-hot rows `[n, n_way]` of `labels` in `dtype`.
fn one_hot(labels: &[usize], n_way: usize, like: &Tensor) -> Result<Tensor> {
    let mut y = vec![0f64; labels.len() * n_way];
    for (i, &l) in labels.iter().enumerate() {
        y[i * n_way + l] = 1.0;
    }
    Ok(Tensor::from_vec(y, (labels.len(), n_way), like.device())?.to_dtype(like.dtype())?)
}

impl Head {
    fn probs(&self, z: &Tensor) -> Result<Tensor> {
        let logits = z.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        Ok(candle_nn::ops::softmax_last_dim(&logits)?)
    }

    /// The mean cross-entropy's gradient `(∇W, ∇b)` over rows `z` with one-hot `y`, and `p`.
    fn grad(&self, z: &Tensor, y: &Tensor) -> Result<(Head, Tensor)> {
        let n = z.dim(0)? as f64;
        let p = self.probs(z)?;
        let r = (&p - y)?;
        Ok((Head { w: (r.t()?.matmul(z)? / n)?, b: (r.sum(0)? / n)? }, p))
    }

    /// `δP` of the direction `v` at probabilities `p`: `pᵢ ⊙ δlᵢ − pᵢ (pᵢ · δlᵢ)`.
    fn delta_p(z: &Tensor, p: &Tensor, v: &Head) -> Result<Tensor> {
        let dl = z.matmul(&v.w.t()?)?.broadcast_add(&v.b)?;
        let pdl = (p * &dl)?;
        Ok((&pdl - p.broadcast_mul(&pdl.sum_keepdim(D::Minus1)?)?)?)
    }

    fn axpy(&self, a: f64, other: &Head) -> Result<Head> {
        Ok(Head { w: (&self.w + (&other.w * a)?)?, b: (&self.b + (&other.b * a)?)? })
    }
}

/// The adapted head after `steps` inner steps from `start` on `(z, y)`, and every head on the way
/// (`θ_0 … θ_{steps-1}`).
fn adapt(start: &Head, z: &Tensor, y: &Tensor, steps: usize, lr: f64) -> Result<(Head, Vec<Head>)> {
    let mut path = Vec::with_capacity(steps);
    let mut h = start.clone();
    for _ in 0..steps {
        let (g, _) = h.grad(z, y)?;
        path.push(h.clone());
        h = h.axpy(-lr, &g)?;
    }
    Ok((h, path))
}

/// What one episode's meta-loss gives: the query loss and the gradients of the head's start and
/// of the (detached) support and query embeddings.
pub struct MetaGrads {
    /// Summed query cross-entropy of the adapted head.
    pub query_loss: f64,
    /// Queries classified right by the adapted head.
    pub correct: usize,
    /// Gradient of the start weights `W₀` and bias `b₀`.
    pub head: (Tensor, Tensor),
    /// Gradient of the support embeddings (zero for first order).
    pub support: Tensor,
    /// Gradient of the query embeddings.
    pub query: Tensor,
}

/// The meta-gradient of an episode (see the module docs): the head starts at `(w0, b0)`,
/// adapts on `(zs, ys)` and is scored on `(zq, yq)`.
pub fn meta_grads(
    w0: &Tensor,
    b0: &Tensor,
    zs: &Tensor,
    ys: &[usize],
    zq: &Tensor,
    yq: &[usize],
    inner: &InnerLoop,
) -> Result<MetaGrads> {
    let n_way = w0.dim(0)?;
    let (ys1, yq1) = (one_hot(ys, n_way, zs)?, one_hot(yq, n_way, zq)?);
    let start = Head { w: w0.clone(), b: b0.clone() };
    let (end, path) = adapt(&start, zs, &ys1, inner.steps, inner.lr)?;
    let pq = end.probs(zq)?;
    let logits = zq.matmul(&end.w.t()?)?.broadcast_add(&end.b)?;
    let correct = count_correct(&logits, yq)?;
    let query_loss = summed_ce(&logits, &yq1)?;
    let rq = (&pq - &yq1)?;
    let mut v = Head { w: rq.t()?.matmul(zq)?, b: rq.sum(0)? };
    let dzq = rq.matmul(&end.w)?;
    let mut dzs = zs.zeros_like()?;
    if inner.second_order {
        let n = zs.dim(0)? as f64;
        for h in path.iter().rev() {
            let p = h.probs(zs)?;
            let dp = Head::delta_p(zs, &p, &v)?;
            let dz = (((&p - &ys1)?.matmul(&v.w)? + dp.matmul(&h.w)?)? / n)?;
            dzs = (dzs - (dz * inner.lr)?)?;
            let hv = Head { w: (dp.t()?.matmul(zs)? / n)?, b: (dp.sum(0)? / n)? };
            v = v.axpy(-inner.lr, &hv)?;
        }
    }
    Ok(MetaGrads { query_loss, correct, head: (v.w, v.b), support: dzs, query: dzq })
}

/// Summed cross-entropy of `logits` against one-hot `y`, computed stably.
fn summed_ce(logits: &Tensor, y: &Tensor) -> Result<f64> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(-(logp * y)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A linear head `PREFIX.head.{weight,bias}` `[n_way, d]`, `[n_way]` over `projection`'s outputs,
/// starting at zero (every way alike: the classes of a way change from episode to episode).
pub(crate) fn zero_head(projection: &Projection, n_way: usize, prefix: &str) -> Result<Vec<(String, Var)>> {
    let w = projection.vars()[2].1.as_tensor();
    zero_head_over(w.dim(0)?, n_way, w, prefix)
}

/// A zero linear head `PREFIX.head.{weight,bias}` `[n_way, width]`, `[n_way]` in `like`'s dtype
/// and on its device.
pub(crate) fn zero_head_over(width: usize, n_way: usize, like: &Tensor, prefix: &str) -> Result<Vec<(String, Var)>> {
    let (dtype, device) = (like.dtype(), like.device());
    Ok(vec![
        (format!("{prefix}.head.weight"), Var::zeros((n_way, width), dtype, device)?),
        (format!("{prefix}.head.bias"), Var::zeros(n_way, dtype, device)?),
    ])
}

/// What ANIL meta-learns: the projection (the body) and the head's start `θ₀ = (W₀, b₀)`, with
/// the inner loop that adapts the head to an episode.
#[derive(Debug, Clone)]
pub struct AnilModel {
    projection: Projection,
    head: Vec<(String, Var)>,
    inner: InnerLoop,
}

impl AnilModel {
    /// `projection` with a head for `n_way` episodes starting at zero (every way alike: the
    /// classes of a way change from episode to episode).
    pub fn new(projection: Projection, n_way: usize, inner: InnerLoop) -> Result<Self> {
        inner.validate()?;
        let head = zero_head(&projection, n_way, "anil")?;
        Ok(Self { projection, head, inner })
    }

    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Every meta-learned variable: the projection's, then the head's start.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.projection.vars().to_vec();
        vars.extend(self.head.iter().cloned());
        vars
    }

    fn start(&self) -> (Tensor, Tensor) {
        (self.head[0].1.as_tensor().detach(), self.head[1].1.as_tensor().detach())
    }

    /// The meta-gradient pieces of `ep` on `features` (the projection applied without a graph).
    pub fn episode_grads(&self, features: &Tensor, ep: &Episode) -> Result<MetaGrads> {
        let zs = self.projection.apply(&select_rows(features, &ep.support)?)?;
        let zq = self.projection.apply(&select_rows(features, &ep.query)?)?;
        let (w0, b0) = self.start();
        meta_grads(&w0, &b0, &zs, &ep.support_labels, &zq, &ep.query_labels, &self.inner)
    }

    /// Query accuracy of `ep` after adapting the head for `eval_steps` on its support set.
    pub fn accuracy(&self, features: &Tensor, ep: &Episode) -> Result<f64> {
        let zs = self.projection.apply(&select_rows(features, &ep.support)?)?;
        let zq = self.projection.apply(&select_rows(features, &ep.query)?)?;
        adapted_accuracy(self.start(), &zs, &zq, ep, &self.inner)
    }
}

/// Query accuracy of `ep` for a head starting at `(w0, b0)` adapted for `inner.eval_steps` on
/// the support embeddings `zs`, scored on the query embeddings `zq`.
pub fn adapted_accuracy(
    (w, b): (Tensor, Tensor),
    zs: &Tensor,
    zq: &Tensor,
    ep: &Episode,
    inner: &InnerLoop,
) -> Result<f64> {
    let ys = one_hot(&ep.support_labels, w.dim(0)?, zs)?;
    let (end, _) = adapt(&Head { w, b }, zs, &ys, inner.eval_steps, inner.lr)?;
    let logits = zq.matmul(&end.w.t()?)?.broadcast_add(&end.b)?;
    Ok(count_correct(&logits, &ep.query_labels)? as f64 / ep.query.len() as f64)
}

/// ANIL's loss of `ep` for the trainer, over embeddings `zs` and `zq` that may carry a graph
/// back to whatever computed them (a projection, adapters inside a decoder), for a head whose
/// start is the variables `head` (`W₀`, `b₀`): the value is the adapted head's query loss, the
/// gradient the exact meta-gradient of the module docs (first order: none through `zs`).
pub(crate) fn episode_loss(
    zs: &Tensor,
    zq: &Tensor,
    head: &[(String, Var)],
    ep: &Episode,
    inner: &InnerLoop,
) -> Result<ObjectiveLoss> {
    let (w0, b0) = (head[0].1.as_tensor(), head[1].1.as_tensor());
    let (ys, yq) = (&ep.support_labels, &ep.query_labels);
    let g = meta_grads(&w0.detach(), &b0.detach(), &zs.detach(), ys, &zq.detach(), yq, inner)?;
    // ⟨x, gx⟩ summed over every input: its gradient is exactly the meta-gradient.
    let dot = |x: &Tensor, g: &Tensor| -> Result<Tensor> { Ok((x * g)?.sum_all()?) };
    let mut surrogate = ((dot(zq, &g.query)? + dot(w0, &g.head.0)?)? + dot(b0, &g.head.1)?)?;
    if inner.second_order {
        surrogate = (surrogate + dot(zs, &g.support)?)?;
    }
    meta_loss(&surrogate, g.query_loss, ep, g.correct)
}

/// An episode's loss for the trainer when its meta-gradient is computed by hand: the value is
/// the query loss `query_loss`, the gradient is `surrogate`'s (a sum whose gradient with respect
/// to the trainable weights is exactly the meta-gradient); `correct` queries are logged as
/// `accuracy`.
pub(crate) fn meta_loss(surrogate: &Tensor, query_loss: f64, ep: &Episode, correct: usize) -> Result<ObjectiveLoss> {
    let value = Tensor::new(query_loss, surrogate.device())?.to_dtype(surrogate.dtype())?;
    let sum = ((surrogate - surrogate.detach())? + value)?;
    Ok(ObjectiveLoss {
        loss: LossSum { sum, count: ep.query.len(), sink: None },
        metrics: vec![("accuracy", correct as f64)],
    })
}

/// The ANIL objective over frozen `features [n, d]`; a batch is an [`Episode`].
pub struct Anil<'a> {
    features: &'a Tensor,
    model: &'a AnilModel,
}

impl<'a> Anil<'a> {
    /// The objective training `model` on `features`.
    pub fn new(features: &'a Tensor, model: &'a AnilModel) -> Self {
        Self { features, model }
    }
}

impl Objective for Anil<'_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("anil", self.model.vars())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        let m = self.model;
        let zs = m.projection.forward(&select_rows(self.features, &ep.support)?)?;
        let zq = m.projection.forward(&select_rows(self.features, &ep.query)?)?;
        episode_loss(&zs, &zq, &m.head, ep, &m.inner)
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}
