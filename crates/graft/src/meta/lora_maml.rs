//! The MAML family inside a decoder: LoRA adapters on the decoder blocks just below the feature
//! layer and a linear head's start `θ = (adapters, W, b)` are meta-trained by first-order MAML,
//! MAML or Reptile, and every inner step adapts the adapters as well as the head (or the head
//! alone under `adapt = head`). The inner loop, the meta-gradients and MAML's finite-difference
//! Hessian-vector products are those of [`crate::objectives::maml`]; here its
//! [`EpisodeModel`] runs the adapted blocks on an episode's texts with the adapters set to the
//! `θ` asked for.
//!
//! A text's features are its pooled states after the adapted blocks, scaled to unit length, as in
//! [`crate::meta::lora_protonet`]; the states below are computed once. `B` and the head start at
//! zero, so before the first step the learner is the projection-free MAML inner loop on the
//! frozen decoder features. Scoring adapts per episode too: each meta-test episode runs the
//! adapted blocks forward and backward `eval_steps` times on its support texts.

use super::episodes::{Episode, EpisodeSampler};
use super::lora_protonet::{attach_below, AdaptedBlocks, DecoderTexts, KeptBlocks, LoraLearnerConfig};
use super::train::fit_episodic;
use crate::features::head::RunOutput;
use crate::features::Pooling;
use crate::models::llama::{Llama, Pass};
use crate::objectives::anil::{meta_loss, zero_head_over};
use crate::objectives::maml::{
    cross_entropy_grads, episode_grad_of, label_tensor, surrogate, EpisodeModel, MamlInner, MetaUpdate, Side,
};
use crate::objectives::protonet::count_correct;
use crate::train::loss::nll_sum;
use crate::train::{Objective, ObjectiveLoss, Outcome, ParamGroup};
use crate::Result;
use candle_core::{DType, Tensor, Var};

/// The settings of `[lora_fomaml]`, `[lora_maml]` and `[lora_reptile]`.
pub type LoraMamlConfig = LoraLearnerConfig<MamlInner>;

/// A learner of the family: the adapters (variables inside the decoder), the head's start, the
/// inner loop and the meta-update. The objective of its meta-training.
pub struct LoraMaml<'a> {
    blocks: AdaptedBlocks<'a>,
    adapters: Vec<(String, Var)>,
    head: Vec<(String, Var)>,
    inner: MamlInner,
    update: MetaUpdate,
    /// The learner's name (`lora_fomaml`, ...), which names its parameter group.
    name: String,
}

impl<'a> LoraMaml<'a> {
    /// The learner over `blocks` (whose adapters are `adapters`) with a zero head named
    /// `name.head.*` for `n_way` episodes.
    pub fn new(
        blocks: AdaptedBlocks<'a>,
        adapters: Vec<(String, Var)>,
        n_way: usize,
        (inner, update): (MamlInner, MetaUpdate),
        name: &str,
    ) -> Result<Self> {
        inner.validate(&format!("{name}.inner"))?;
        let probe = blocks.features(&[0], Pass::Infer)?;
        let head = zero_head_over(probe.dim(1)?, n_way, &probe, name)?;
        Ok(Self { blocks, adapters, head, inner, update, name: name.into() })
    }

    /// Every meta-learned variable: the adapters', then the head's start.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.adapters.iter().chain(&self.head).cloned().collect()
    }

    /// Runs `f` on `ep` from the current `θ` (copied: the inner loop sets the adapters to other
    /// values), then sets the adapters back to `θ`, also when `f` fails.
    fn on_episode<T>(&self, ep: &Episode, f: impl FnOnce(&DecoderEpisode, &[Tensor]) -> Result<T>) -> Result<T> {
        let theta = self.vars().iter().map(|(_, v)| Ok(v.as_tensor().copy()?.detach())).collect::<Result<Vec<_>>>()?;
        let like = &theta[0];
        let episode = DecoderEpisode {
            blocks: &self.blocks,
            adapters: &self.adapters,
            ep,
            ys: label_tensor(&ep.support_labels, like)?,
            yq: label_tensor(&ep.query_labels, like)?,
        };
        let out = f(&episode, &theta);
        episode.set_adapters(&theta)?;
        out
    }

    /// Query logits of `ep` after `steps` inner steps on its support texts.
    fn adapted_logits(&self, ep: &Episode, steps: usize) -> Result<Tensor> {
        self.on_episode(ep, |episode, theta| {
            let (end, _) = self.inner.adapt(episode, theta, steps)?;
            episode.logits(&end, Side::Query, Pass::Infer)
        })
    }

    /// Summed query loss of `ep` after the meta-training inner loop (the validation loss).
    pub fn query_loss(&self, ep: &Episode) -> Result<f64> {
        let logits = self.adapted_logits(ep, self.inner.steps)?;
        let y = label_tensor(&ep.query_labels, &logits)?;
        Ok(nll_sum(&logits, &y)?.0.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Query accuracy of `ep` after `eval_steps` inner steps on its support texts.
    pub fn accuracy(&self, ep: &Episode) -> Result<f64> {
        let logits = self.adapted_logits(ep, self.inner.eval_steps)?;
        Ok(count_correct(&logits, &ep.query_labels)? as f64 / ep.query.len() as f64)
    }
}

impl Objective for LoraMaml<'_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new(&self.name, self.vars())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        let g = self.on_episode(ep, |episode, theta| episode_grad_of(episode, theta, &self.inner, self.update))?;
        meta_loss(&surrogate(&self.vars(), &g.grad)?, g.query_loss, ep, g.correct)
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}

/// One episode read by the adapted blocks: `θ` is the adapters' values, then the head's.
struct DecoderEpisode<'a, 'm> {
    blocks: &'a AdaptedBlocks<'m>,
    adapters: &'a [(String, Var)],
    ep: &'a Episode,
    ys: Tensor,
    yq: Tensor,
}

impl DecoderEpisode<'_, '_> {
    /// Sets the adapters to the first values of `theta`.
    fn set_adapters(&self, theta: &[Tensor]) -> Result<()> {
        for ((_, v), t) in self.adapters.iter().zip(theta) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Logits of `side`'s texts at `theta` under `pass`, with the head's `(W, b)` as given.
    fn logits_with(&self, theta: &[Tensor], head: (&Tensor, &Tensor), side: Side, pass: Pass) -> Result<Tensor> {
        self.set_adapters(theta)?;
        let rows = match side {
            Side::Support => &self.ep.support,
            Side::Query => &self.ep.query,
        };
        let z = self.blocks.features(rows, pass)?;
        Ok(z.matmul(&head.0.t()?)?.broadcast_add(head.1)?)
    }

    /// Logits of `side`'s texts at `theta`.
    fn logits(&self, theta: &[Tensor], side: Side, pass: Pass) -> Result<Tensor> {
        let k = self.adapters.len();
        self.logits_with(theta, (&theta[k], &theta[k + 1]), side, pass)
    }
}

impl EpisodeModel for DecoderEpisode<'_, '_> {
    fn loss_grad(&self, theta: &[Tensor], side: Side, mean: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let k = self.adapters.len();
        let (w, b) = (Var::from_tensor(&theta[k])?, Var::from_tensor(&theta[k + 1])?);
        let logits = self.logits_with(theta, (w.as_tensor(), b.as_tensor()), side, Pass::Train)?;
        let params: Vec<Tensor> = self
            .adapters
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .chain([w.as_tensor().clone(), b.as_tensor().clone()])
            .collect();
        let y = if side == Side::Support { &self.ys } else { &self.yq };
        let grads = cross_entropy_grads(&logits, y, mean, &params)?;
        Ok((logits.detach(), grads))
    }

    fn labels(&self, side: Side) -> &[usize] {
        match side {
            Side::Support => &self.ep.support_labels,
            Side::Query => &self.ep.query_labels,
        }
    }
}

/// What scoring needs once meta-training is over: a copy of the decoder holding the
/// meta-trained adapters, the kept states below them, the head's start and the inner loop.
pub struct AdaptedMaml {
    model: Llama,
    kept: KeptBlocks,
    adapters: Vec<(String, Var)>,
    head: Vec<(String, Var)>,
    inner: MamlInner,
    update: MetaUpdate,
    name: String,
}

impl AdaptedMaml {
    /// Query accuracy of `ep` after `eval_steps` inner steps on its support texts.
    pub fn accuracy(&self, ep: &Episode) -> Result<f64> {
        let learner = LoraMaml {
            blocks: self.kept.on(&self.model),
            adapters: self.adapters.clone(),
            head: self.head.clone(),
            inner: self.inner,
            update: self.update,
            name: self.name.clone(),
        };
        learner.accuracy(ep)
    }
}

/// Attaches fresh adapters (`cfg`) to the `cfg.blocks` blocks of `model` below the feature layer
/// `layer` and meta-trains them and a zero-started head by `update`, the inner loop being
/// `cfg.inner` (absent: [`MamlInner::default`]), on `texts` over `train`'s episodes; the
/// adapted query loss on `val`'s first `cfg.train.val_episodes` episodes is the evaluation.
/// `name` is the learner (`lora_fomaml`, `lora_maml`, `lora_reptile`). Checkpoints,
/// `metrics.jsonl` and resume in `out.dir`. The adapters stay attached to `model`; the result
/// holds its own copy of the decoder with them.
#[allow(clippy::too_many_arguments)]
pub fn fit_lora_maml(
    model: &mut Llama,
    texts: &DecoderTexts,
    (layer, pooling): (Option<usize>, Pooling),
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &LoraMamlConfig,
    (name, update): (&str, MetaUpdate),
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(AdaptedMaml, Outcome)> {
    cfg.validate(name)?;
    let inner = cfg.inner.unwrap_or_default();
    let adapters = attach_below(model, layer, cfg, name)?;
    let blocks = AdaptedBlocks::over(model, texts, layer, cfg.blocks, pooling)?;
    let kept = blocks.kept();
    let objective = LoraMaml::new(blocks, adapters, train.shape().n_way, (inner, update), name)?;
    let val_loss = |ep: &Episode| objective.query_loss(ep);
    let settings = serde_json::json!({ name: cfg, "inner": inner, "update": update, "run": settings });
    let outcome = fit_episodic(&objective, train, val, &cfg.train, settings, val_loss, out)?;
    let LoraMaml { adapters, head, name, .. } = objective;
    Ok((AdaptedMaml { model: model.clone(), kept, adapters, head, inner, update, name }, outcome))
}
