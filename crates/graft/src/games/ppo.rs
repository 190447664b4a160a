//! Proximal policy optimisation (Schulman et al. 2017) on the one [`Trainer`](crate::train::Trainer): the clipped
//! surrogate objective, a squared-error value loss and an entropy bonus over minibatches of
//! complete-episode rollouts ([`super::rollout`]). Each update plays a rollout with a snapshot
//! of the policy, then runs `epochs` passes of `minibatches` shuffled minibatches over it, one
//! optimizer step each. The snapshot and the index of the rollout it played are kept as the
//! objective's buffers, so they are in every checkpoint: a run resumed in the middle of an
//! update plays the same rollout again and continues exactly.

pub use super::agent::AgentOutcome;
use super::agent::{bind_run, trainer};
use super::policy::{Part, PolicyNet};
use super::rollout::{collect, Acting, Rollout, RolloutLog, RolloutPlan};
pub use super::rollout::{UpdateRecord, ROLLOUTS_FILE};
use super::EnvSpec;
use crate::train::step::LossSum;
use crate::train::{BatchSource, Event, Objective, ObjectiveLoss, ParamGroup, RunDir};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// PPO's settings (the `[ppo]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Rollouts played (updates).
    pub updates: usize,
    /// Environment copies played in lockstep.
    pub envs: usize,
    /// A rollout holds at least this many transitions (whole episodes).
    pub steps_per_update: usize,
    /// Passes over each rollout.
    pub epochs: usize,
    /// Minibatches per pass (one optimizer step each).
    pub minibatches: usize,
    /// AdamW learning rate (constant).
    pub lr: f64,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub gae_lambda: f64,
    /// Clipping range ε of the probability ratio.
    pub clip: f64,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Seed of the policy's initial weights, the episodes, the actions and the minibatches.
    pub seed: u64,
}

impl Default for PpoConfig {
    /// 60 updates of at least 1,024 steps on 4 copies, 10 epochs of 8 minibatches, AdamW
    /// 3e-4, γ 0.99, λ 0.95, ε 0.2, value weight 0.5, no entropy bonus, clip 0.5, seed 0.
    fn default() -> Self {
        Self {
            updates: 60,
            envs: 4,
            steps_per_update: 1024,
            epochs: 10,
            minibatches: 8,
            lr: 3e-4,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip: 0.2,
            value_coef: 0.5,
            entropy_coef: 0.0,
            max_grad_norm: 0.5,
            seed: 0,
        }
    }
}

impl PpoConfig {
    /// Refuses settings that cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(GraftError::Input(format!("ppo: {m}")));
        if self.updates == 0 || self.epochs == 0 || self.minibatches == 0 || self.envs == 0 {
            return bad("`updates`, `epochs`, `minibatches` and `envs` must be at least 1");
        }
        if self.steps_per_update < self.minibatches {
            return bad("`steps_per_update` must be at least `minibatches`");
        }
        if !(self.lr > 0.0
            && self.clip > 0.0
            && (0.0..=1.0).contains(&self.gamma)
            && (0.0..=1.0).contains(&self.gae_lambda))
        {
            return bad("`lr` and `clip` must be above 0, `gamma` and `gae_lambda` between 0 and 1");
        }
        if self.value_coef < 0.0 || self.entropy_coef < 0.0 || self.max_grad_norm < 0.0 {
            return bad("`value_coef`, `entropy_coef` and `max_grad_norm` cannot be negative");
        }
        Ok(())
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        (self.updates * self.epochs * self.minibatches) as u64
    }

    fn plan(&self) -> RolloutPlan {
        RolloutPlan {
            envs: self.envs,
            min_steps: self.steps_per_update,
            gamma: self.gamma,
            lambda: self.gae_lambda,
            acting: Acting::Sample,
        }
    }
}

/// One minibatch of transitions, advantages already normalised within it.
#[derive(Debug, Clone)]
pub struct Minibatch {
    /// `[m, width]`.
    pub observations: Tensor,
    /// `[m]` (u32).
    pub actions: Tensor,
    /// Log-probabilities of the actions under the policy that played them, `[m]`.
    pub old_log_probs: Tensor,
    /// Normalised advantages `[m]`.
    pub advantages: Tensor,
    /// Value targets `[m]`.
    pub returns: Tensor,
}

/// The PPO loss of a policy whose parts `train` learn (each at its learning-rate scale).
pub struct PpoObjective {
    policy: PolicyNet,
    groups: Vec<ParamGroup>,
    snapshot: PolicyNet,
    snapshot_vars: Vec<(String, Var)>,
    snapshot_update: Var,
    clip: f64,
    value_coef: f64,
    entropy_coef: f64,
}

/// The buffer holding the index of the rollout the snapshot played.
const SNAPSHOT_UPDATE: &str = "rollout.update";

impl PpoObjective {
    /// The objective over `policy`, training the parts `train` (`(part, lr_scale)`); the other
    /// parts stay fixed.
    pub fn new(mut policy: PolicyNet, train: &[(Part, f64)], cfg: &PpoConfig) -> Result<Self> {
        cfg.validate()?;
        let mut groups = Vec::new();
        for &(part, lr_scale) in train {
            let vars = policy.trainable(&[part])?;
            let name = format!("{part:?}").to_lowercase();
            groups.push(ParamGroup { lr_scale, ..ParamGroup::new(&name, vars) });
        }
        if groups.iter().all(|g| g.vars.is_empty()) {
            return Err(GraftError::Input("ppo: nothing of the policy trains".into()));
        }
        let mut snapshot = policy.snapshot()?;
        let mut snapshot_vars = Vec::new();
        for (name, t) in snapshot.named_tensors() {
            let var = Var::from_tensor(&t)?;
            snapshot = snapshot.with_tensor(&name, var.as_tensor().detach())?;
            snapshot_vars.push((format!("rollout.policy.{name}"), var));
        }
        let snapshot_update = Var::from_tensor(&Tensor::new(&[-1f64], &policy.device())?)?;
        Ok(Self {
            policy,
            groups,
            snapshot,
            snapshot_vars,
            snapshot_update,
            clip: cfg.clip,
            value_coef: cfg.value_coef,
            entropy_coef: cfg.entropy_coef,
        })
    }

    /// The policy being trained (its tensors follow training).
    pub fn policy(&self) -> &PolicyNet {
        &self.policy
    }

    /// Copies the live policy into the snapshot for rollout `update`, unless it already plays it
    /// (a resumed run restores the snapshot from the checkpoint).
    fn snapshot_for(&self, update: u64) -> Result<&PolicyNet> {
        let current = self.snapshot_update.as_tensor().to_vec1::<f64>()?[0];
        if current != update as f64 {
            let live: std::collections::BTreeMap<String, Tensor> = self.policy.named_tensors().into_iter().collect();
            for (name, var) in &self.snapshot_vars {
                var.set(&live[name.trim_start_matches("rollout.policy.")].detach())?;
            }
            self.snapshot_update.set(&Tensor::new(&[update as f64], &self.policy.device())?)?;
        }
        Ok(&self.snapshot)
    }
}

impl Objective for PpoObjective {
    type Batch = Minibatch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        self.groups.iter().filter(|g| !g.vars.is_empty()).cloned().collect()
    }

    /// Per transition: `−min(r·Â, clip(r, 1 ± ε)·Â) + c_v (V − R)² − c_e H(π)`, summed.
    fn loss(&self, mb: &Minibatch, _micro_step: u64) -> Result<ObjectiveLoss> {
        let (logits, values) = self.policy.forward(&mb.observations)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let taken = log_probs.gather(&mb.actions.unsqueeze(1)?, 1)?.squeeze(1)?;
        let log_ratio = (taken - &mb.old_log_probs)?;
        let ratio = log_ratio.exp()?;
        let surr1 = (&ratio * &mb.advantages)?;
        let surr2 = (ratio.clamp(1.0 - self.clip, 1.0 + self.clip)? * &mb.advantages)?;
        let policy_loss = surr1.minimum(&surr2)?.neg()?;
        let value_loss = (values - &mb.returns)?.sqr()?;
        let entropy = (log_probs.exp()? * &log_probs)?.sum(D::Minus1)?.neg()?;
        let per = ((&policy_loss + (&value_loss * self.value_coef)?)? - (&entropy * self.entropy_coef)?)?;
        let count = mb.actions.dim(0)?;
        let sum_of = |t: &Tensor| -> Result<f64> { Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let clipped = (ratio.affine(1.0, -1.0)?.abs()?.gt(self.clip)?).to_dtype(DType::F64)?;
        let approx_kl = ((ratio.affine(1.0, -1.0)? - &log_ratio)?).detach();
        let metrics = vec![
            ("policy_loss", sum_of(&policy_loss.detach())?),
            ("value_loss", sum_of(&value_loss.detach())?),
            ("entropy", sum_of(&entropy.detach())?),
            ("clip_fraction", sum_of(&clipped)?),
            ("approx_kl", sum_of(&approx_kl)?),
        ];
        Ok(ObjectiveLoss { loss: LossSum { sum: per.sum_all()?, count, sink: None }, metrics })
    }

    fn batch_size(&self, mb: &Minibatch) -> usize {
        mb.actions.dims1().unwrap_or(0)
    }

    /// The snapshot that plays the rollouts and the rollout's index.
    fn buffers(&self) -> Vec<(String, Var)> {
        let mut out = self.snapshot_vars.clone();
        out.push((SNAPSHOT_UPDATE.into(), self.snapshot_update.clone()));
        out
    }
}

/// The trainer's micro-batches: minibatch `k` of epoch `e` of update `u` at run-wide index
/// `(u · epochs + e) · minibatches + k`, over the rollout of update `u`.
pub struct PpoSource<'a> {
    objective: &'a PpoObjective,
    spec: EnvSpec,
    cfg: PpoConfig,
    current: Option<(u64, Rollout)>,
    log: RolloutLog,
}

impl<'a> PpoSource<'a> {
    /// Rollouts of `spec` for `objective`; with `log`, each update's record is appended to that
    /// file once (a resumed run keeps the earlier lines).
    pub fn new(objective: &'a PpoObjective, spec: EnvSpec, cfg: PpoConfig, log: Option<PathBuf>) -> Result<Self> {
        Ok(Self { objective, spec, cfg, current: None, log: RolloutLog::open(log)? })
    }

    /// Every update's record so far.
    pub fn records(&self) -> &[UpdateRecord] {
        self.log.records()
    }

    fn rollout(&mut self, update: u64) -> Result<&Rollout> {
        if self.current.as_ref().map(|c| c.0) != Some(update) {
            let snapshot = self.objective.snapshot_for(update)?;
            let rollout = collect(&self.spec, self.cfg.seed, snapshot, update, self.cfg.plan())?;
            self.log.record(update, &rollout)?;
            self.current = Some((update, rollout));
        }
        Ok(&self.current.as_ref().expect("set above").1)
    }
}

impl BatchSource<Minibatch> for PpoSource<'_> {
    fn batch(&mut self, index: u64) -> Result<Minibatch> {
        let (epochs, minibatches) = (self.cfg.epochs as u64, self.cfg.minibatches as u64);
        let update = index / (epochs * minibatches);
        let epoch = index / minibatches % epochs;
        let k = (index % minibatches) as usize;
        let (seed, parts) = (self.cfg.seed, self.cfg.minibatches);
        let device = self.objective.policy.device();
        let dtype = self.objective.policy.dtype();
        let r = self.rollout(update)?;
        let n = r.len();
        let mut order: Vec<usize> = (0..n).collect();
        crate::data::shuffle(&mut order, seed ^ update.wrapping_mul(0x9E37_79B9_7F4A_7C15), epoch);
        let size = n.div_ceil(parts);
        let rows: Vec<usize> = order.iter().copied().skip(k * size).take(size).collect();
        if rows.is_empty() {
            return Err(GraftError::Input(format!("update {update}: a rollout of {n} steps has no minibatch {k}")));
        }
        let pick = |v: &[f32]| rows.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let w = r.width;
        let obs: Vec<f32> = rows.iter().flat_map(|&i| r.observations[i * w..(i + 1) * w].iter().copied()).collect();
        let adv = normalise(&pick(&r.advantages));
        let m = rows.len();
        let tensor = |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(v, m, &device)?.to_dtype(dtype)?) };
        Ok(Minibatch {
            observations: Tensor::from_vec(obs, (m, w), &device)?.to_dtype(dtype)?,
            actions: Tensor::from_vec(rows.iter().map(|&i| r.actions[i]).collect::<Vec<u32>>(), m, &device)?,
            old_log_probs: tensor(pick(&r.log_probs))?,
            advantages: tensor(adv)?,
            returns: tensor(pick(&r.returns))?,
        })
    }
}

/// `(a − mean) / (std + 1e-8)` with the sample standard deviation (one value: centred only).
pub fn normalise(a: &[f32]) -> Vec<f32> {
    let n = a.len() as f64;
    let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = if a.len() > 1 { a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    a.iter().map(|&x| ((x as f64 - mean) / (var.sqrt() + 1e-8)) as f32).collect()
}

/// Trains `policy` (the parts `train`, each at its learning-rate scale) with PPO on `spec` for
/// `cfg.updates` updates; with `run_dir`, checkpoints, `metrics.jsonl` and
/// [`ROLLOUTS_FILE`] go there and an interrupted run resumes exactly.
pub fn train_ppo(
    spec: &EnvSpec,
    policy: PolicyNet,
    train: &[(Part, f64)],
    cfg: &PpoConfig,
    run_dir: Option<RunDir>,
    on_event: &mut dyn FnMut(Event),
) -> Result<AgentOutcome> {
    let objective = PpoObjective::new(policy, train, cfg)?;
    let (run_dir, log) = bind_run(run_dir, spec, "ppo", cfg, train)?;
    let mut source = PpoSource::new(&objective, spec.clone(), cfg.clone(), log)?;
    let trainer = trainer(cfg.total_steps(), cfg.lr, cfg.max_grad_norm, run_dir);
    let outcome = trainer.run(&objective, &mut source, on_event)?;
    let records = source.records().to_vec();
    Ok(AgentOutcome { policy: objective.policy().snapshot()?, records, trainer: outcome })
}
