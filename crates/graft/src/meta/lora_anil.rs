//! ANIL inside a decoder: LoRA adapters on the decoder blocks just below the feature layer and
//! a linear head's start are meta-trained together. Per episode the head adapts to the support
//! set's features (the inner loop of [`crate::objectives::anil`], in closed form), and the
//! meta-gradient of the adapted head's query loss flows into the adapters through the query
//! features and — second order, exactly — through the support features the head adapted on.
//!
//! The body is the decoder itself, not a projection over its frozen features: a text's features
//! are its pooled states after the adapted blocks, scaled to unit length, as in
//! [`crate::meta::lora_protonet`]. `B` starts at zero and the head at zero, so before the first
//! step the learner is ANIL's inner loop on the frozen decoder features. After meta-training the
//! adapted features of every text are computed once; scoring a meta-test episode adapts the
//! head's start on them, which costs what ANIL's scoring costs.

use super::episodes::{Episode, EpisodeSampler};
use super::evaluate::select_rows;
use super::lora_protonet::{attach_below, AdaptedBlocks, DecoderTexts, LoraLearnerConfig};
use super::train::fit_episodic;
use crate::features::head::RunOutput;
use crate::features::Pooling;
use crate::models::llama::{Llama, Pass};
use crate::objectives::anil::{adapted_accuracy, episode_loss, meta_grads, zero_head_over, InnerLoop};
use crate::train::{Objective, ObjectiveLoss, Outcome, ParamGroup};
use crate::Result;
use candle_core::{Tensor, Var};

/// The objective: ANIL's episode loss on the adapted decoder features; the adapters and the
/// head's start train.
pub struct LoraAnil<'a, 'm> {
    blocks: &'a AdaptedBlocks<'m>,
    adapters: Vec<(String, Var)>,
    head: Vec<(String, Var)>,
    inner: InnerLoop,
}

impl<'a, 'm> LoraAnil<'a, 'm> {
    /// The learner over `blocks` (whose adapters are `adapters`) with a zero head for `n_way`
    /// episodes, adapting as `inner` says.
    pub fn new(
        blocks: &'a AdaptedBlocks<'m>,
        adapters: Vec<(String, Var)>,
        n_way: usize,
        inner: InnerLoop,
    ) -> Result<Self> {
        inner.validate()?;
        let probe = blocks.features(&[0], Pass::Infer)?;
        let head = zero_head_over(probe.dim(1)?, n_way, &probe, "lora_anil")?;
        Ok(Self { blocks, adapters, head, inner })
    }

    /// The head's start `(W₀, b₀)`, detached.
    pub fn head_start(&self) -> (Tensor, Tensor) {
        (self.head[0].1.as_tensor().detach(), self.head[1].1.as_tensor().detach())
    }

    /// Every meta-learned variable: the adapters', then the head's start.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.adapters.iter().chain(&self.head).cloned().collect()
    }

    /// Summed query loss of `ep` after the meta-training inner loop (the validation loss).
    pub fn query_loss(&self, ep: &Episode) -> Result<f64> {
        let zs = self.blocks.features(&ep.support, Pass::Infer)?;
        let zq = self.blocks.features(&ep.query, Pass::Infer)?;
        let (w0, b0) = self.head_start();
        Ok(meta_grads(&w0, &b0, &zs, &ep.support_labels, &zq, &ep.query_labels, &self.inner)?.query_loss)
    }
}

impl Objective for LoraAnil<'_, '_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("lora_anil", self.vars())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        // First order sends nothing back through the support features: no graph for them.
        let support_pass = if self.inner.second_order { Pass::Train } else { Pass::Infer };
        let zs = self.blocks.features(&ep.support, support_pass)?;
        let zq = self.blocks.features(&ep.query, Pass::Train)?;
        episode_loss(&zs, &zq, &self.head, ep, &self.inner)
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}

/// What scoring needs once meta-training is over: every text's adapted features, the head's
/// meta-learned start and the inner loop.
pub struct AdaptedAnil {
    /// Unit-length adapted features `[n, hidden]` of every text.
    pub features: Tensor,
    start: (Tensor, Tensor),
    inner: InnerLoop,
}

impl AdaptedAnil {
    /// Query accuracy of `ep` after adapting the head's start for `eval_steps` on its support
    /// features.
    pub fn accuracy(&self, ep: &Episode) -> Result<f64> {
        let zs = select_rows(&self.features, &ep.support)?;
        let zq = select_rows(&self.features, &ep.query)?;
        adapted_accuracy(self.start.clone(), &zs, &zq, ep, &self.inner)
    }
}

/// Attaches fresh adapters (`cfg`) to the `cfg.blocks` blocks of `model` below the feature layer
/// `layer` and meta-trains them with a zero-started head, ANIL's inner loop being `cfg.inner`
/// (absent: [`InnerLoop::default`]), on `texts` over `train`'s episodes; the adapted
/// head's mean query loss on `val`'s first `cfg.train.val_episodes` episodes is the evaluation.
/// Checkpoints, `metrics.jsonl` and resume in `out.dir`. The adapters stay attached to `model`.
#[allow(clippy::too_many_arguments)]
pub fn fit_lora_anil(
    model: &mut Llama,
    texts: &DecoderTexts,
    (layer, pooling): (Option<usize>, Pooling),
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &LoraLearnerConfig,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(AdaptedAnil, Outcome)> {
    cfg.validate("lora_anil")?;
    let inner = cfg.inner.unwrap_or_default();
    let adapters = attach_below(model, layer, cfg, "lora_anil")?;
    let blocks = AdaptedBlocks::over(model, texts, layer, cfg.blocks, pooling)?;
    let objective = LoraAnil::new(&blocks, adapters, train.shape().n_way, inner)?;
    let val_loss = |ep: &Episode| objective.query_loss(ep);
    let settings = serde_json::json!({ "lora_anil": cfg, "inner": inner, "run": settings });
    let outcome = fit_episodic(&objective, train, val, &cfg.train, settings, val_loss, out)?;
    let adapted = AdaptedAnil { features: blocks.all_features()?, start: objective.head_start(), inner };
    Ok((adapted, outcome))
}
