//! Meta-training on the one trainer: one episode is one micro-batch, drawn by the
//! [`EpisodeSampler`] as a pure function of the run-wide micro-batch index, so checkpoints and
//! exact resume come from the trainer as for every other technique. The held-out loss the
//! trainer reports is the learner's mean query loss per query over fixed meta-validation
//! episodes (ProtoNet's, or ANIL's after adapting the head).

use super::episodes::{Episode, EpisodeSampler};
use super::evaluate::select_rows;
use super::projection::Projection;
use crate::features::head::RunOutput;
use crate::objectives::anil::{Anil, AnilModel, InnerLoop};
use crate::objectives::maml::{Maml, MamlInner, MamlModel, MetaUpdate};
use crate::objectives::protonet::{protonet_loss, ProtoNet};
use crate::train::optim::{AdamWConfig, OptimizerKind};
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::{BatchSource, Evaluation, LoopSettings, Objective, Outcome, RunDir, Trainer};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

impl BatchSource<Episode> for EpisodeSampler {
    fn batch(&mut self, index: u64) -> Result<Episode> {
        Ok(self.episode(index))
    }
}

/// How a learner meta-trains (prototypical networks and ANIL alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaTrainConfig {
    /// Hidden units of the residual projection ([`Projection`]).
    pub hidden: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Episodes per optimizer step (their query losses are summed and divided by the step's
    /// queries).
    pub episodes_per_step: u64,
    /// AdamW learning rate (constant).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the projection's initial weights.
    pub seed: u64,
    /// Meta-validation episodes whose mean loss is the run's evaluation loss (0 = none).
    pub val_episodes: usize,
    /// Evaluate on them every N steps (0 = only before and after training).
    pub eval_every: u64,
    /// Write a checkpoint every N steps (0 = only at the end).
    pub save_every: u64,
}

impl Default for MetaTrainConfig {
    /// 256 hidden units, 300 steps of 4 episodes, AdamW at 1e-3 without weight decay, seed 0,
    /// 50 validation episodes every 100 steps, a checkpoint every 100 steps.
    fn default() -> Self {
        Self {
            hidden: 256,
            steps: 300,
            episodes_per_step: 4,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: 0,
            val_episodes: 50,
            eval_every: 100,
            save_every: 100,
        }
    }
}

impl MetaTrainConfig {
    /// Refuses settings that cannot train, naming the key under `section`.
    pub fn validate(&self, section: &str) -> Result<()> {
        let bad = |m: &str| Err(GraftError::Input(format!("{section}: {m}")));
        if self.hidden == 0 {
            return bad("hidden must be at least 1");
        }
        if self.steps == 0 || self.episodes_per_step == 0 {
            return bad("steps and episodes_per_step must be at least 1");
        }
        let rate_ok = self.lr.is_finite() && self.lr > 0.0;
        if !(rate_ok && self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("lr must be positive and weight_decay non-negative");
        }
        Ok(())
    }
}

/// Meta-trains a fresh [`Projection`] on `features [n, d]` with the ProtoNet loss over the
/// episodes of `train` (`cfg.episodes_per_step` per step), its loss on `val`'s first
/// `cfg.val_episodes` episodes as the evaluation; checkpoints, `metrics.jsonl` and resume in
/// `out.dir` (whose settings must match `settings` to resume).
pub fn fit_protonet(
    features: &Tensor,
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &MetaTrainConfig,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(Projection, Outcome)> {
    cfg.validate("protonet")?;
    let (_, dim) = features.dims2()?;
    let projection = Projection::new(dim, cfg.hidden, cfg.seed, features.device(), features.dtype())?;
    let objective = ProtoNet::new(features, &projection);
    let val_loss = |ep: &Episode| -> Result<f64> {
        let s = projection.apply(&select_rows(features, &ep.support)?)?;
        let q = projection.apply(&select_rows(features, &ep.query)?)?;
        let (loss, _) = protonet_loss(&s, &ep.support_labels, &q, &ep.query_labels, ep.ways.len())?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    };
    let settings = serde_json::json!({ "protonet": cfg, "run": settings });
    let outcome = fit_episodic(&objective, train, val, cfg, settings, val_loss, out)?;
    Ok((projection, outcome))
}

/// Meta-trains ANIL ([`AnilModel`]: a fresh [`Projection`] and the head's start) on
/// `features [n, d]` over the episodes of `train`, the inner loop as `inner` says; the
/// evaluation is the adapted head's mean query loss on `val`'s first `cfg.val_episodes`
/// episodes. Checkpoints, `metrics.jsonl` and resume as for [`fit_protonet`].
pub fn fit_anil(
    features: &Tensor,
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &MetaTrainConfig,
    inner: &InnerLoop,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(AnilModel, Outcome)> {
    cfg.validate("anil")?;
    let (_, dim) = features.dims2()?;
    let projection = Projection::new(dim, cfg.hidden, cfg.seed, features.device(), features.dtype())?;
    let model = AnilModel::new(projection, train.shape().n_way, *inner)?;
    let objective = Anil::new(features, &model);
    let val_loss = |ep: &Episode| Ok(model.episode_grads(features, ep)?.query_loss);
    let settings = serde_json::json!({ "anil": cfg, "inner": inner, "run": settings });
    let outcome = fit_episodic(&objective, train, val, cfg, settings, val_loss, out)?;
    Ok((model, outcome))
}

/// Meta-trains MAML, first-order MAML or Reptile (`update`; [`MamlModel`]: a fresh
/// [`Projection`] and a zero head) on `features [n, d]` over the episodes of `train`, the inner
/// loop as `inner` says; the evaluation is the adapted model's mean query loss on `val`'s first
/// `cfg.val_episodes` episodes. `section` names the config section in errors. Checkpoints,
/// `metrics.jsonl` and resume as for [`fit_protonet`].
#[allow(clippy::too_many_arguments)]
pub fn fit_maml(
    features: &Tensor,
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &MetaTrainConfig,
    inner: &MamlInner,
    update: MetaUpdate,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<(MamlModel, Outcome)> {
    cfg.validate("maml")?;
    let (_, dim) = features.dims2()?;
    let projection = Projection::new(dim, cfg.hidden, cfg.seed, features.device(), features.dtype())?;
    let model = MamlModel::new(projection, train.shape().n_way, *inner, update)?;
    let objective = Maml::new(features, &model);
    let val_loss = |ep: &Episode| model.query_loss(features, ep);
    let settings = serde_json::json!({ "maml": cfg, "inner": inner, "update": update, "run": settings });
    let outcome = fit_episodic(&objective, train, val, cfg, settings, val_loss, out)?;
    Ok((model, outcome))
}

/// Runs an episodic `objective` on the trainer: `train`'s episode `i` is micro-batch `i`,
/// AdamW at a constant `cfg.lr`; the evaluation is `val_loss` (a summed query loss) averaged
/// per query over `val`'s first `cfg.val_episodes` episodes. `settings` is what a resume must
/// match.
pub(crate) fn fit_episodic<O: Objective<Batch = Episode>>(
    objective: &O,
    train: &EpisodeSampler,
    val: Option<&EpisodeSampler>,
    cfg: &MetaTrainConfig,
    settings: serde_json::Value,
    val_loss: impl Fn(&Episode) -> Result<f64>,
    out: RunOutput,
) -> Result<Outcome> {
    let val_eps: Vec<Episode> = match val {
        Some(v) => (0..cfg.val_episodes as u64).map(|i| v.episode(i)).collect(),
        None => Vec::new(),
    };
    let mut evaluate = || -> Result<Evaluation> {
        let (mut sum, mut count) = (0f64, 0usize);
        for ep in &val_eps {
            sum += val_loss(ep)?;
            count += ep.query.len();
        }
        Ok(Evaluation::from(sum / count.max(1) as f64))
    };
    let loop_settings = LoopSettings {
        total_steps: cfg.steps,
        grad_accum: cfg.episodes_per_step,
        max_grad_norm: 0.0,
        schedule: Schedule { kind: ScheduleKind::Constant, peak: cfg.lr, warmup: 0, total: cfg.steps },
        eval_every: cfg.eval_every,
        pcgrad: None,
        precision: crate::ops::MatmulPrecision::F32,
    };
    let run_dir = out.dir.map(|d| {
        let text = settings.to_string();
        d.with_settings(text.clone(), RunDir::same_text(&text))
    });
    let optimizer = OptimizerKind::AdamW(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() });
    let trainer = Trainer {
        settings: loop_settings,
        optimizer,
        run_dir,
        evaluate: if val_eps.is_empty() { None } else { Some(&mut evaluate) },
    };
    let mut batches = train.clone();
    trainer.run(objective, &mut batches, out.on_event)
}
