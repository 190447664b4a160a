//! MAML (Finn et al. 2017), first-order MAML and Reptile (Nichol et al. 2018) as objectives: one
//! micro-batch is one episode. The model is the [`Projection`] over frozen embeddings and a
//! linear softmax head `(W, b)` starting at zero; together `θ`. Per episode the inner loop takes
//! `steps` gradient steps of rate `α` on the support set's mean cross-entropy, adapting every
//! parameter (`adapt = all`) or the head alone (`adapt = head`, the projection stays at `θ`):
//! `θ_{t+1} = θ_t − α M ∇L_s(θ_t)`, `M` the mask of adapted parameters. Then, with `L_q` the
//! summed query cross-entropy:
//!
//! - **first-order MAML**: the meta-gradient is `∇L_q(θ_T)`, taken at the adapted parameters and
//!   applied to `θ`;
//! - **MAML** (second order): the exact meta-gradient `dL_q(θ_T)/dθ`, backwards from
//!   `v_T = ∇L_q(θ_T)` by `v_t = v_{t+1} − α H_t M v_{t+1}` (`H_t` the support loss's Hessian at
//!   `θ_t`); `v_0` is the gradient. candle cannot differentiate through a gradient, so each
//!   Hessian-vector product is a central finite difference of gradients,
//!   `H u ≈ (∇L_s(θ_t + εu) − ∇L_s(θ_t − εu)) / 2ε` with `ε = hvp_step / ‖u‖` (error `O(ε²)`);
//! - **Reptile**: the "gradient" is `θ − θ_T`, times the episode's query count so that the
//!   trainer's division by the queries of a step averages it over the step's episodes. With a
//!   plain gradient step of rate `ε` this is Reptile's `θ ← θ + ε (θ_T − θ)`; the trainer's AdamW
//!   treats it as a gradient, as Nichol et al. do with Adam.
//!
//! The loss handed to the trainer is a surrogate `Σ ⟨θ, g⟩` whose gradient is exactly `g` and
//! whose value is the adapted query loss `L_q(θ_T)` (as for [`crate::objectives::anil`]).

use crate::meta::evaluate::select_rows;
use crate::meta::{Episode, Projection};
use crate::objectives::anil::{meta_loss, zero_head};
use crate::objectives::protonet::count_correct;
use crate::train::loss::nll_sum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Which parameters the inner loop adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Adapt {
    /// The projection and the head.
    All,
    /// The head only (the projection is shared as in ANIL).
    Head,
}

/// How the meta-gradient is formed from an adapted episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaUpdate {
    /// First-order MAML: the query gradient at the adapted parameters.
    FirstOrder,
    /// MAML through finite-difference Hessian-vector products.
    SecondOrder,
    /// Reptile: towards the adapted parameters.
    Reptile,
}

/// The inner loop of MAML, first-order MAML and Reptile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamlInner {
    /// Gradient steps on the support set during meta-training.
    pub steps: usize,
    /// Gradient steps on the support set when scoring meta-test episodes.
    pub eval_steps: usize,
    /// Inner learning rate α.
    pub lr: f64,
    /// Which parameters adapt: `all` (projection and head) or `head`.
    pub adapt: Adapt,
    /// Second-order MAML only: the length `ε‖u‖` of the finite-difference step of each
    /// Hessian-vector product.
    pub hvp_step: f64,
}

impl Default for MamlInner {
    /// 5 steps (10 when scoring) at α = 0.5 adapting everything; Hessian-vector products with a
    /// step of length 1e-3.
    fn default() -> Self {
        Self { steps: 5, eval_steps: 10, lr: 0.5, adapt: Adapt::All, hvp_step: 1e-3 }
    }
}

impl MamlInner {
    /// Refuses an inner loop that cannot adapt, naming the keys under `section`.
    pub fn validate(&self, section: &str) -> Result<()> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if self.steps == 0 || self.eval_steps == 0 || !positive(self.lr) || !positive(self.hvp_step) {
            return Err(GraftError::Input(format!(
                "{section}: steps and eval_steps must be at least 1, lr and hvp_step positive, got {}, {}, {} and {}",
                self.steps, self.eval_steps, self.lr, self.hvp_step
            )));
        }
        Ok(())
    }
}

/// Labels as a u32 tensor on `like`'s device.
pub(crate) fn label_tensor(labels: &[usize], like: &Tensor) -> Result<Tensor> {
    let l: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    Ok(Tensor::from_vec(l, labels.len(), like.device())?)
}

/// Which examples of an episode a loss is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The support set (the inner loop's loss).
    Support,
    /// The queries (the meta-objective).
    Query,
}

/// A classifier whose parameters `θ` (a list of tensors, the head's `(W, b)` last) the MAML
/// family adapts on one episode: its cross-entropy and gradient at any `θ`.
pub trait EpisodeModel {
    /// Logits of `side`'s examples at `theta` (detached) and the gradient of their
    /// cross-entropy, summed or, when `mean`, averaged, one tensor per parameter.
    fn loss_grad(&self, theta: &[Tensor], side: Side, mean: bool) -> Result<(Tensor, Vec<Tensor>)>;

    /// The labels of `side`'s examples.
    fn labels(&self, side: Side) -> &[usize];
}

/// One episode over frozen features: the projection and head `[W₁, b₁, W₂, b₂, W, b]`.
struct FrozenEpisode<'a> {
    xs: &'a Tensor,
    xq: &'a Tensor,
    ys: (&'a [usize], Tensor),
    yq: (&'a [usize], Tensor),
}

impl EpisodeModel for FrozenEpisode<'_> {
    fn loss_grad(&self, theta: &[Tensor], side: Side, mean: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let (x, y) = match side {
            Side::Support => (self.xs, &self.ys.1),
            Side::Query => (self.xq, &self.yq.1),
        };
        let vars = theta.iter().map(|t| Ok(Var::from_tensor(&t.detach())?)).collect::<Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let l = logits(&ts, x)?;
        let grads = cross_entropy_grads(&l, y, mean, &ts)?;
        Ok((l.detach(), grads))
    }

    fn labels(&self, side: Side) -> &[usize] {
        match side {
            Side::Support => self.ys.0,
            Side::Query => self.yq.0,
        }
    }
}

/// Gradients with respect to `params` of the cross-entropy of `logits` against `y` (summed, or
/// averaged when `mean`); a parameter the loss does not reach gets zeros.
pub(crate) fn cross_entropy_grads(logits: &Tensor, y: &Tensor, mean: bool, params: &[Tensor]) -> Result<Vec<Tensor>> {
    let (sum, n) = nll_sum(logits, y)?;
    let loss = if mean { (sum / n as f64)? } else { sum };
    let g = loss.backward()?;
    params.iter().map(|t| Ok(g.get(t).cloned().unwrap_or(t.zeros_like()?))).collect()
}

/// Logits of `x` under `θ = [W₁, b₁, W₂, b₂, W, b]`.
fn logits(theta: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let z = Projection::forward_with(&theta[..4], x)?;
    Ok(z.matmul(&theta[4].t()?)?.broadcast_add(&theta[5])?)
}

/// `a + s·b` elementwise over parameter lists.
fn axpy(a: &[Tensor], s: f64, b: &[Tensor]) -> Result<Vec<Tensor>> {
    a.iter().zip(b).map(|(x, y)| Ok((x + (y * s)?)?)).collect()
}

/// Squared Euclidean norm of a parameter list.
fn norm2(a: &[Tensor]) -> Result<f64> {
    a.iter().map(|t| Ok(t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)).sum()
}

impl MamlInner {
    /// `u` with the parameters that do not adapt set to zero (`M u`): under `adapt = head`
    /// everything but the last two (the head's `W`, `b`).
    fn mask(&self, u: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let head = u.len().saturating_sub(2);
        u.into_iter()
            .enumerate()
            .map(|(i, t)| if self.adapt == Adapt::All || i >= head { Ok(t) } else { Ok(t.zeros_like()?) })
            .collect()
    }

    /// `θ_T` after `steps` inner steps from `theta` on `model`'s support set, and
    /// `θ_0 … θ_{T−1}`.
    pub fn adapt(
        &self,
        model: &impl EpisodeModel,
        theta: &[Tensor],
        steps: usize,
    ) -> Result<(Vec<Tensor>, Vec<Vec<Tensor>>)> {
        let mut path = Vec::with_capacity(steps);
        let mut h = theta.to_vec();
        for _ in 0..steps {
            let (_, g) = model.loss_grad(&h, Side::Support, true)?;
            let next = axpy(&h, -self.lr, &self.mask(g)?)?;
            path.push(std::mem::replace(&mut h, next));
        }
        Ok((h, path))
    }

    /// `H u` of the mean support loss at `theta` by a central difference of gradients.
    fn hvp(&self, model: &impl EpisodeModel, theta: &[Tensor], u: &[Tensor]) -> Result<Vec<Tensor>> {
        let norm = norm2(u)?.sqrt();
        if norm == 0.0 {
            return u.iter().map(|t| Ok(t.zeros_like()?)).collect();
        }
        let eps = self.hvp_step / norm;
        let (_, plus) = model.loss_grad(&axpy(theta, eps, u)?, Side::Support, true)?;
        let (_, minus) = model.loss_grad(&axpy(theta, -eps, u)?, Side::Support, true)?;
        plus.iter().zip(&minus).map(|(p, m)| Ok(((p - m)? / (2.0 * eps))?)).collect()
    }
}

/// One episode's meta-gradient: the adapted query loss, the queries it gets right and `g`.
pub struct EpisodeGrad {
    /// Summed query cross-entropy at the adapted parameters.
    pub query_loss: f64,
    /// Queries classified right at the adapted parameters.
    pub correct: usize,
    /// The meta-gradient, one tensor per parameter in the order of `θ`.
    pub grad: Vec<Tensor>,
}

/// The meta-gradient of `update` for parameters `theta` (`[W₁, b₁, W₂, b₂, W, b]`), adapted on
/// `(xs, ys)` and scored on `(xq, yq)` (frozen embeddings and labels); see the module docs.
pub fn episode_grad(
    theta: &[Tensor],
    (xs, ys): (&Tensor, &[usize]),
    (xq, yq): (&Tensor, &[usize]),
    inner: &MamlInner,
    update: MetaUpdate,
) -> Result<EpisodeGrad> {
    let model = FrozenEpisode { xs, xq, ys: (ys, label_tensor(ys, xs)?), yq: (yq, label_tensor(yq, xq)?) };
    episode_grad_of(&model, theta, inner, update)
}

/// The meta-gradient of `update` for `model`'s parameters `theta` on its episode (see the
/// module docs): the inner loop on the support set, then the query loss at the adapted
/// parameters.
pub fn episode_grad_of(
    model: &impl EpisodeModel,
    theta: &[Tensor],
    inner: &MamlInner,
    update: MetaUpdate,
) -> Result<EpisodeGrad> {
    let (end, path) = inner.adapt(model, theta, inner.steps)?;
    let (lq, gq) = model.loss_grad(&end, Side::Query, false)?;
    let yq = model.labels(Side::Query);
    let query_loss = nll_sum(&lq, &label_tensor(yq, &lq)?)?.0.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let correct = count_correct(&lq, yq)?;
    let grad = match update {
        MetaUpdate::FirstOrder => gq,
        MetaUpdate::Reptile => {
            axpy(theta, -1.0, &end)?.iter().map(|d| Ok((d * yq.len() as f64)?)).collect::<Result<_>>()?
        }
        MetaUpdate::SecondOrder => {
            let mut v = gq;
            for h in path.iter().rev() {
                let hv = inner.hvp(model, h, &inner.mask(v.clone())?)?;
                v = axpy(&v, -inner.lr, &hv)?;
            }
            v
        }
    };
    Ok(EpisodeGrad { query_loss, correct, grad })
}

/// `Σ ⟨v, g⟩` over the variables `vars` and their meta-gradients `grad`: a scalar whose gradient
/// with respect to `vars` is exactly `grad`.
pub(crate) fn surrogate(vars: &[(String, Var)], grad: &[Tensor]) -> Result<Tensor> {
    let mut sum = Tensor::zeros((), vars[0].1.dtype(), vars[0].1.device())?;
    for ((_, v), g) in vars.iter().zip(grad) {
        sum = (sum + (v.as_tensor() * g)?.sum_all()?)?;
    }
    Ok(sum)
}

/// What MAML, first-order MAML and Reptile meta-learn: the projection and the head's start, with
/// the inner loop and the meta-update.
#[derive(Debug, Clone)]
pub struct MamlModel {
    projection: Projection,
    head: Vec<(String, Var)>,
    inner: MamlInner,
    update: MetaUpdate,
}

impl MamlModel {
    /// `projection` with a zero head for `n_way` episodes.
    pub fn new(projection: Projection, n_way: usize, inner: MamlInner, update: MetaUpdate) -> Result<Self> {
        inner.validate("maml.inner")?;
        let head = zero_head(&projection, n_way, "maml")?;
        Ok(Self { projection, head, inner, update })
    }

    /// Every meta-learned variable: the projection's, then the head's start.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.projection.vars().to_vec();
        vars.extend(self.head.iter().cloned());
        vars
    }

    /// The current parameters `θ`, detached.
    fn theta(&self) -> Vec<Tensor> {
        self.vars().iter().map(|(_, v)| v.as_tensor().detach()).collect()
    }

    /// The meta-gradient of `ep` on `features`.
    pub fn episode_grad(&self, features: &Tensor, ep: &Episode) -> Result<EpisodeGrad> {
        let xs = select_rows(features, &ep.support)?;
        let xq = select_rows(features, &ep.query)?;
        episode_grad(&self.theta(), (&xs, &ep.support_labels), (&xq, &ep.query_labels), &self.inner, self.update)
    }

    /// Summed query loss of `ep` after the meta-training inner loop (the validation loss).
    pub fn query_loss(&self, features: &Tensor, ep: &Episode) -> Result<f64> {
        let logits = self.adapted_logits(features, ep, self.inner.steps)?;
        let y = label_tensor(&ep.query_labels, &logits)?;
        Ok(nll_sum(&logits, &y)?.0.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Query accuracy of `ep` after `eval_steps` inner steps on its support set.
    pub fn accuracy(&self, features: &Tensor, ep: &Episode) -> Result<f64> {
        let logits = self.adapted_logits(features, ep, self.inner.eval_steps)?;
        Ok(count_correct(&logits, &ep.query_labels)? as f64 / ep.query.len() as f64)
    }

    fn adapted_logits(&self, features: &Tensor, ep: &Episode, steps: usize) -> Result<Tensor> {
        let (xs, xq) = (select_rows(features, &ep.support)?, select_rows(features, &ep.query)?);
        let ys = (ep.support_labels.as_slice(), label_tensor(&ep.support_labels, &xs)?);
        let yq = (ep.query_labels.as_slice(), label_tensor(&ep.query_labels, &xq)?);
        let (end, _) = self.inner.adapt(&FrozenEpisode { xs: &xs, xq: &xq, ys, yq }, &self.theta(), steps)?;
        logits(&end, &xq)
    }
}

/// The MAML / first-order MAML / Reptile objective over frozen `features [n, d]`; a batch is an
/// [`Episode`].
pub struct Maml<'a> {
    features: &'a Tensor,
    model: &'a MamlModel,
}

impl<'a> Maml<'a> {
    /// The objective training `model` on `features`.
    pub fn new(features: &'a Tensor, model: &'a MamlModel) -> Self {
        Self { features, model }
    }
}

impl Objective for Maml<'_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("maml", self.model.vars())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        let g = self.model.episode_grad(self.features, ep)?;
        // Value: the adapted query loss; gradient: the surrogate's, the meta-gradient.
        meta_loss(&surrogate(&self.model.vars(), &g.grad)?, g.query_loss, ep, g.correct)
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}
