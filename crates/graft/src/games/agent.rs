//! What every learner of [`super::ppo`] and [`super::dqn`] shares around its objective: the
//! run's settings (what a resume must match), the rollout log's place, the trainer (a constant
//! Adam rate, one micro-batch per step) and the outcome handed back.

use super::policy::{Part, PolicyNet};
use super::rollout::{UpdateRecord, ROLLOUTS_FILE};
use super::EnvSpec;
use crate::train::optim::{AdamWConfig, OptimizerKind};
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::{LoopSettings, RunDir, Trainer};
use crate::Result;
use std::path::PathBuf;

/// What an agent's training run gives back (PPO or DQN).
pub struct AgentOutcome {
    /// The trained policy (a copy, detached from training).
    pub policy: PolicyNet,
    /// Every update's rollout record, in order.
    pub records: Vec<UpdateRecord>,
    /// The trainer's outcome (steps, losses, wall time).
    pub trainer: crate::train::Outcome,
}

/// The run folder bound to the run's settings (the variant, the learner's section under
/// `learner`, the trained parts) and where its rollout log goes.
pub(crate) fn bind_run(
    run_dir: Option<RunDir>,
    spec: &EnvSpec,
    learner: &str,
    cfg: &impl serde::Serialize,
    train: &[(Part, f64)],
) -> Result<(Option<RunDir>, Option<PathBuf>)> {
    let settings = serde_json::to_string(&serde_json::json!({
        "env": spec, learner: cfg, "train": train.iter().map(|(p, s)| format!("{p:?}:{s}")).collect::<Vec<_>>(),
    }))?;
    let log = run_dir.as_ref().map(|d| d.path().join(ROLLOUTS_FILE));
    Ok((run_dir.map(|d| d.with_settings(settings.clone(), RunDir::same_text(&settings))), log))
}

/// The trainer of an agent: `total` steps of one micro-batch, Adam (no weight decay) at a
/// constant `lr`, gradients clipped at `max_grad_norm`.
pub(crate) fn trainer<'a>(total: u64, lr: f64, max_grad_norm: f64, run_dir: Option<RunDir>) -> Trainer<'a> {
    Trainer {
        settings: LoopSettings {
            total_steps: total,
            grad_accum: 1,
            max_grad_norm,
            schedule: Schedule { kind: ScheduleKind::Constant, peak: lr, warmup: 0, total },
            eval_every: 0,
            pcgrad: None,
            precision: crate::ops::MatmulPrecision::F32,
        },
        optimizer: OptimizerKind::AdamW(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }),
        run_dir,
        evaluate: None,
    }
}
