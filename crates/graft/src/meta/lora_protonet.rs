//! A prototypical network that learns inside a decoder: LoRA adapters on the decoder blocks just
//! below the feature layer are meta-trained with the ProtoNet loss, a text's features being its
//! pooled states after those blocks scaled to unit length (as the frozen decoder features every
//! other learner reads). `B` starts at zero, so before training the learner is exactly nearest
//! centroid on the frozen decoder features: meta-training can only move away from that baseline
//! where it lowers the episode loss.
//!
//! The frozen blocks below the adapted ones run once over every text and their output is kept;
//! each step runs only the adapted blocks (and the final norm when the features are the model's
//! last states) on the episode's texts. After meta-training the adapted features of every text
//! are computed once, and scoring a meta-test episode is nearest centroid on them.

use super::episodes::{Episode, EpisodeSampler};
use super::train::{fit_episodic, MetaTrainConfig};
use crate::adapters::lora::{attach, LoraSpec};
use crate::data::in_length_groups;
use crate::features::extract::pool_precise;
use crate::features::head::RunOutput;
use crate::features::tune::{pad_states, states_after};
use crate::features::Pooling;
use crate::models::bert::l2_normalize;
use crate::models::llama::{Llama, Pass};
use crate::objectives::anil::InnerLoop;
use crate::objectives::maml::MamlInner;
use crate::objectives::protonet::protonet_loss;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, Outcome, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Meta-training a learner whose LoRA adapters live inside a decoder: the LoRA prototypical
/// network (`[lora_protonet]`), ANIL inside the decoder (`[lora_anil]`,
/// [`crate::meta::lora_anil`]) and the MAML family inside it (`[lora_fomaml]`, `[lora_maml]`,
/// `[lora_reptile]`, [`crate::meta::lora_maml`], whose inner loop `I` is [`MamlInner`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraLearnerConfig<I = InnerLoop> {
    /// Meta-train and score this learner (it needs a decoder: a `[decoder]` section).
    pub enabled: bool,
    /// Decoder blocks just below the feature layer that get adapters.
    pub blocks: usize,
    /// Module-name suffixes adapted in those blocks.
    pub targets: Vec<String>,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA scaling numerator α (scale α / rank).
    pub alpha: f64,
    /// The inner loop (absent: its default): the head's for `lora_anil`, the adapters' and
    /// head's for the MAML family; the prototypical network has none and refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<I>,
    /// Meta-training: the keys of `[protonet]` (`steps`, `episodes_per_step`, `lr`,
    /// `weight_decay`, `seed` of the `A` factors, `val_episodes`, `eval_every`, `save_every`);
    /// `hidden` is not used (no projection).
    pub train: MetaTrainConfig,
}

/// The LoRA prototypical network's settings (`[lora_protonet]`).
pub type LoraProtoNetConfig = LoraLearnerConfig;

impl<I> Default for LoraLearnerConfig<I> {
    /// Off; rank-8 adapters (α = 16) on every projection of the 2 blocks below the feature layer;
    /// 100 steps of 1 episode at AdamW 1e-4, seed 0; 10 validation episodes every 25 steps; a
    /// checkpoint every 25 steps (`train.hidden` unused).
    fn default() -> Self {
        Self {
            enabled: false,
            blocks: 2,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            rank: 8,
            alpha: 16.0,
            inner: None,
            train: MetaTrainConfig {
                steps: 100,
                episodes_per_step: 1,
                lr: 1e-4,
                val_episodes: 10,
                eval_every: 25,
                save_every: 25,
                ..MetaTrainConfig::default()
            },
        }
    }
}

/// An inner loop that can refuse settings that cannot adapt.
pub trait InnerSettings {
    /// Refuses settings that cannot adapt, naming the keys under `section`.
    fn check(&self, section: &str) -> Result<()>;
}

impl InnerSettings for InnerLoop {
    fn check(&self, _section: &str) -> Result<()> {
        self.validate()
    }
}

impl InnerSettings for MamlInner {
    fn check(&self, section: &str) -> Result<()> {
        self.validate(section)
    }
}

impl<I: PartialEq> LoraLearnerConfig<I> {
    /// Whether every setting is its default (such a section is left out when the config is
    /// written, so that records of configs without it still match).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl<I: InnerSettings> LoraLearnerConfig<I> {
    /// Refuses settings that cannot train, naming the key under `section`.
    pub fn validate(&self, section: &str) -> Result<()> {
        self.train.validate(&format!("{section}.train"))?;
        if let Some(inner) = &self.inner {
            inner.check(&format!("{section}.inner"))?;
        }
        let bad = |m: &str| Err(GraftError::Input(format!("{section}: {m}")));
        if self.blocks == 0 {
            return bad("blocks must be at least 1");
        }
        if self.targets.is_empty() {
            return bad("targets must name at least one module (e.g. \"q_proj\")");
        }
        self.spec(0..1).validate()
    }

    /// The LoRA spec over blocks `blocks`: every target module of each of them.
    fn spec(&self, blocks: std::ops::Range<usize>) -> LoraSpec {
        let targets =
            blocks.flat_map(|i| self.targets.iter().map(move |t| format!("layers.{i}.*.{t}"))).collect::<Vec<_>>();
        LoraSpec { r: self.rank, alpha: self.alpha, dropout: 0.0, rslora: false, targets }
    }
}

/// Attaches fresh adapters (`cfg`, the `A` factors drawn from `cfg.train.seed`) to the
/// `cfg.blocks` blocks of `model` below the feature layer `layer`; `section` names the learner
/// in errors. Returns the adapters' variables.
pub(crate) fn attach_below<I: InnerSettings>(
    model: &mut Llama,
    layer: Option<usize>,
    cfg: &LoraLearnerConfig<I>,
    section: &str,
) -> Result<Vec<(String, Var)>> {
    let blocks = adapted_blocks(model, layer, cfg.blocks)
        .map_err(|e| GraftError::Input(format!("{section}: {e}: lower `{section}.blocks` or raise `decoder.layer`")))?;
    Ok(attach(model, &cfg.spec(blocks), cfg.train.seed)?.named_vars())
}

/// The texts the learners inside one decoder read, with the frozen states below their adapted
/// blocks: computed on first use for each first adapted block and then shared, so that every
/// learner of a run whose adapters start at the same block reads the same kept states instead of
/// running the frozen blocks over every text again. Meant for one decoder whose blocks below
/// the adapted ones stay frozen (every learner's adapters lie above the states it reads).
pub struct DecoderTexts<'s> {
    seqs: &'s [Vec<u32>],
    batch: usize,
    below: RefCell<BTreeMap<usize, Vec<Tensor>>>,
}

impl<'s> DecoderTexts<'s> {
    /// The token sequences `seqs`, run through the frozen blocks in batches of `batch`.
    pub fn new(seqs: &'s [Vec<u32>], batch: usize) -> Self {
        Self { seqs, batch, below: RefCell::default() }
    }

    /// Each text's residual states `[len, hidden]` after the blocks `0..start` of `model`,
    /// computed once per `start`.
    pub fn states_below(&self, model: &Llama, start: usize) -> Result<Vec<Tensor>> {
        if let Some(kept) = self.below.borrow().get(&start) {
            return Ok(kept.clone());
        }
        let states = states_after(model, self.seqs, start, self.batch)?;
        self.below.borrow_mut().insert(start, states.clone());
        Ok(states)
    }

    /// The first blocks whose input states are kept, in order.
    pub fn kept_starts(&self) -> Vec<usize> {
        self.below.borrow().keys().copied().collect()
    }
}

/// The decoder blocks a learner runs per text: the kept states below them, the blocks, and how
/// their output becomes unit-length features.
pub struct AdaptedBlocks<'a> {
    model: &'a Llama,
    /// Each text's residual states `[len, hidden]` before the first adapted block.
    lower: Vec<Tensor>,
    blocks: std::ops::Range<usize>,
    pooling: Pooling,
    batch: usize,
}

impl<'a> AdaptedBlocks<'a> {
    /// Runs the frozen blocks below the `adapted` ones under the feature layer `layer` (`None`:
    /// the last block, then the final norm) once over `seqs`, in batches of `batch`.
    pub fn new(
        model: &'a Llama,
        seqs: &[Vec<u32>],
        layer: Option<usize>,
        adapted: usize,
        pooling: Pooling,
        batch: usize,
    ) -> Result<Self> {
        Self::over(model, &DecoderTexts::new(seqs, batch), layer, adapted, pooling)
    }

    /// [`AdaptedBlocks::new`] over `texts`, whose kept states below the blocks are shared with
    /// every other learner reading them.
    pub fn over(
        model: &'a Llama,
        texts: &DecoderTexts,
        layer: Option<usize>,
        adapted: usize,
        pooling: Pooling,
    ) -> Result<Self> {
        let blocks = adapted_blocks(model, layer, adapted)?;
        let lower = texts.states_below(model, blocks.start)?;
        Ok(Self { model, lower, blocks, pooling, batch: texts.batch })
    }

    /// The blocks that are adapted.
    pub fn blocks(&self) -> std::ops::Range<usize> {
        self.blocks.clone()
    }

    /// The decoder they run in.
    pub fn model(&self) -> &'a Llama {
        self.model
    }

    /// The same kept states and blocks, run in `model` (a copy of the decoder whose blocks
    /// train): the states below are computed once for every copy.
    pub fn through<'b>(&self, model: &'b Llama) -> AdaptedBlocks<'b> {
        self.kept().on(model)
    }

    /// What these blocks keep besides the decoder, to run them later in a decoder held
    /// elsewhere.
    pub fn kept(&self) -> KeptBlocks {
        KeptBlocks { lower: self.lower.clone(), blocks: self.blocks.clone(), pooling: self.pooling, batch: self.batch }
    }

    /// Unit-length features `[rows.len(), hidden]` of the texts `rows` (f32; f64 for an f64
    /// model), with a graph back to the adapters under [`Pass::Train`].
    /// Texts of similar length run together ([`in_length_groups`]), so little is padded.
    pub fn features(&self, rows: &[usize], pass: Pass) -> Result<Tensor> {
        let lens = rows.iter().map(|&i| self.lower[i].dim(0)).collect::<candle_core::Result<Vec<_>>>()?;
        in_length_groups(&lens, |group| self.padded_features(&group.iter().map(|&g| rows[g]).collect::<Vec<_>>(), pass))
    }

    /// [`AdaptedBlocks::features`] of `rows` in one padded batch.
    fn padded_features(&self, rows: &[usize], pass: Pass) -> Result<Tensor> {
        let (x, lens) = pad_states(&rows.iter().map(|&i| &self.lower[i]).collect::<Vec<_>>())?;
        let mut hidden = self.model.run_blocks(&x, self.blocks.clone(), pass)?;
        if self.blocks.end == self.model.config().num_hidden_layers {
            hidden = self.model.final_norm(&hidden, pass)?;
        }
        l2_normalize(&pool_precise(&hidden, &lens, self.pooling)?)
    }

    /// Unit-length features `[n, hidden]` of every text, detached, in batches.
    pub fn all_features(&self) -> Result<Tensor> {
        let mut rows: Vec<Option<Tensor>> = vec![None; self.lower.len()];
        // Texts of similar length share a batch, so little is padded.
        let mut order: Vec<usize> = (0..self.lower.len()).collect();
        order.sort_by_key(|&i| self.lower[i].dim(0).unwrap_or(0));
        for chunk in order.chunks(self.batch) {
            let feats = self.features(chunk, Pass::Infer)?.detach();
            for (r, &i) in chunk.iter().enumerate() {
                rows[i] = Some(feats.get(r)?);
            }
        }
        crate::features::extract::stack_rows(rows)
    }

    /// Summed ProtoNet query loss of `ep` and the queries classified right.
    fn episode_loss(&self, ep: &Episode, pass: Pass) -> Result<(Tensor, usize)> {
        let support = self.features(&ep.support, pass)?;
        let query = self.features(&ep.query, pass)?;
        protonet_loss(&support, &ep.support_labels, &query, &ep.query_labels, ep.ways.len())
    }
}

/// [`AdaptedBlocks`] without their decoder: the kept states below the blocks, which blocks, how
/// their output is pooled.
#[derive(Debug, Clone)]
pub struct KeptBlocks {
    lower: Vec<Tensor>,
    blocks: std::ops::Range<usize>,
    pooling: Pooling,
    batch: usize,
}

impl KeptBlocks {
    /// The blocks run in `model`.
    pub fn on<'a>(&self, model: &'a Llama) -> AdaptedBlocks<'a> {
        let KeptBlocks { lower, blocks, pooling, batch } = self.clone();
        AdaptedBlocks { model, lower, blocks, pooling, batch }
    }
}

/// The `adapted` blocks just below the feature layer `layer` (`None`: the last block) of
/// `model`, or an error when they do not fit under it.
fn adapted_blocks(model: &Llama, layer: Option<usize>, adapted: usize) -> Result<std::ops::Range<usize>> {
    let n = model.config().num_hidden_layers;
    let end = layer.unwrap_or(n);
    if end > n || adapted > end {
        return Err(GraftError::Input(format!(
            "{adapted} adapted blocks below feature layer {end} of a {n}-block decoder \
             (they must lie within blocks 0..{end})"
        )));
    }
    Ok(end - adapted..end)
}

/// The objective: an episode's ProtoNet loss on the adapted features; the adapters train.
struct LoraProtoNet<'a, 'm> {
    blocks: &'a AdaptedBlocks<'m>,
    adapters: Vec<(String, Var)>,
}

impl Objective for LoraProtoNet<'_, '_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("lora", self.adapters.clone())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        let (sum, correct) = self.blocks.episode_loss(ep, Pass::Train)?;
        Ok(ObjectiveLoss {
            loss: LossSum { sum, count: ep.query.len(), sink: None },
            metrics: vec![("accuracy", correct as f64)],
        })
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}

/// Attaches fresh adapters (`cfg`) to the `cfg.blocks` blocks of `model` below the feature layer
/// `layer` and meta-trains them on `texts` with the ProtoNet loss over `train`'s
/// episodes, the mean query loss on `val`'s first `cfg.val_episodes` episodes as the evaluation;
/// checkpoints, `metrics.jsonl` and resume in `out.dir`. Returns every text's adapted features
/// `[n, hidden]` (unit length) and the outcome; the adapters stay attached to `model`.
#[allow(clippy::too_many_arguments)]
pub fn fit_lora_protonet(
    model: &mut Llama,
    texts: &DecoderTexts,
    (layer, pooling): (Option<usize>, Pooling),
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &LoraProtoNetConfig,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(Tensor, Outcome)> {
    cfg.validate("lora_protonet")?;
    let adapters = attach_below(model, layer, cfg, "lora_protonet")?;
    let blocks = AdaptedBlocks::over(model, texts, layer, cfg.blocks, pooling)?;
    let objective = LoraProtoNet { blocks: &blocks, adapters };
    let val_loss = |ep: &Episode| -> Result<f64> {
        let (loss, _) = blocks.episode_loss(ep, Pass::Infer)?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    };
    let settings = serde_json::json!({ "lora_protonet": cfg, "run": settings });
    let outcome = fit_episodic(&objective, train, val, &cfg.train, settings, val_loss, out)?;
    Ok((blocks.all_features()?, outcome))
}
