//! `graft games train`: an agent learned on one game variant with PPO ([`crate::games::ppo`]),
//! and the learning-curve measures a transfer report compares — the return of the first rollout
//! (jump-start), the episodes and steps until a rollout's mean return reaches the goal, the area
//! under the curve (the mean return over every training episode) and the final return. The
//! policy, `rollouts.jsonl`, `metrics.jsonl`, checkpoints and `summary.json` go to the output
//! folder; `graft games render` plays the saved policy into an animated PNG.

use crate::config::read_toml;
use crate::device::parse_device;
use crate::games::dqn::{train_dqn, DqnConfig};
use crate::games::policy::{Part, PolicyNet};
use crate::games::ppo::{train_ppo, PpoConfig, UpdateRecord};
use crate::games::transfer::{TransferMethod, DEFAULT_LATERAL_RANK};
use crate::games::EnvSpec;
use crate::train::{Event, RunDir};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The policy file in a run folder.
pub const POLICY_FILE: &str = "policy.safetensors";

/// The config of `graft games train` (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GamesConfig {
    /// The game variant (`kind` and its context).
    pub env: EnvSpec,
    /// The policy network.
    #[serde(default)]
    pub model: ModelSection,
    /// Which learner trains the agent.
    #[serde(default)]
    pub agent: AgentSection,
    /// How PPO trains (`agent.algorithm = "ppo"`).
    #[serde(default)]
    pub ppo: PpoConfig,
    /// How DQN trains (`agent.algorithm = "dqn"`).
    #[serde(default)]
    pub dqn: DqnConfig,
    /// What counts as solved.
    #[serde(default)]
    pub goal: GoalSection,
    /// Start from another variant's trained policy instead of a fresh one.
    #[serde(default)]
    pub transfer: Option<TransferSection>,
    /// Where the run writes.
    pub output: OutputSection,
}

/// Where a transferred policy comes from and how it is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSection {
    /// The source policy: a `policy.safetensors` file or the `graft games train` folder
    /// holding one.
    pub from: PathBuf,
    /// `scratch`, `warm_start`, `frozen_trunk`, `remap` or `progressive` ([`TransferMethod`]).
    pub method: TransferMethod,
    /// Inner width of a `progressive` column's lateral adapters.
    #[serde(default = "default_lateral_rank")]
    pub lateral_rank: usize,
}

fn default_lateral_rank() -> usize {
    DEFAULT_LATERAL_RANK
}

/// What a transfer took from its source (`summary.json`'s `transfer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSummary {
    /// The source policy file.
    pub from: PathBuf,
    /// The method.
    pub method: TransferMethod,
    /// The tensors taken from the source.
    pub kept: Vec<String>,
}

/// Which learner trains the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// `ppo` (default) or `dqn`.
    pub algorithm: Algorithm,
}

/// The learners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Proximal policy optimisation ([`crate::games::ppo`]).
    #[default]
    Ppo,
    /// Deep Q-learning ([`crate::games::dqn`]): the actor read as Q-values.
    Dqn,
}

/// The policy network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hidden widths of the actor's and the critic's trunks.
    pub hidden: Vec<usize>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl Default for ModelSection {
    /// Two hidden layers of 64 on the CPU.
    fn default() -> Self {
        Self { hidden: vec![64, 64], device: "cpu".into() }
    }
}

/// What counts as solved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoalSection {
    /// Mean episode return of a rollout that counts as reaching the goal; absent: the game's
    /// own ([`default_threshold`]).
    pub threshold: Option<f64>,
}

/// Where the run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// The run folder.
    pub dir: PathBuf,
    /// Checkpoint every N optimizer steps (0: at the end of every update).
    #[serde(default)]
    pub save_every: u64,
}

/// The goal of a game when the config names none: the cart-pole 475 (of 500), the acrobot −100
/// (Gymnasium's reward thresholds), the maze 0.8 (the goal reached in about a fifth of the
/// step limit).
pub fn default_threshold(env: &EnvSpec) -> f64 {
    match env {
        EnvSpec::Cartpole(_) => 475.0,
        EnvSpec::Acrobot(_) => -100.0,
        EnvSpec::Gridworld(_) => 0.8,
    }
}

/// Whether the TOML file at `path` is a `graft games train` config (it has an `[env]` table).
pub fn is_games_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.get("env").is_some_and(toml::Value::is_table))
}

impl GamesConfig {
    /// Reads `path` with `overrides` (`section.key=value`) and checks it; `transfer.from` is
    /// resolved against the config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        if let Some(t) = &mut cfg.transfer {
            t.from = crate::config::relative_to(path.parent().unwrap_or(Path::new(".")), &t.from);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses a config that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.env.make(0)?;
        match self.agent.algorithm {
            Algorithm::Ppo => self.ppo.validate()?,
            Algorithm::Dqn => self.dqn.validate()?,
        }
        if self.transfer.as_ref().is_some_and(|t| t.lateral_rank == 0) {
            return Err(GraftError::Input("transfer.lateral_rank must be at least 1".into()));
        }
        if self.model.hidden.is_empty() || self.model.hidden.contains(&0) {
            return Err(GraftError::Input(format!(
                "model.hidden must list one or more widths of at least 1, got {:?}",
                self.model.hidden
            )));
        }
        Ok(())
    }

    /// The seed of the chosen learner's section.
    pub fn seed(&self) -> u64 {
        match self.agent.algorithm {
            Algorithm::Ppo => self.ppo.seed,
            Algorithm::Dqn => self.dqn.seed,
        }
    }

    /// Optimizer steps of one update of the chosen learner.
    fn steps_per_update(&self) -> u64 {
        match self.agent.algorithm {
            Algorithm::Ppo => (self.ppo.epochs * self.ppo.minibatches) as u64,
            Algorithm::Dqn => self.dqn.train_steps as u64,
        }
    }
}

/// One point of a learning curve: after update `update`, how many episodes and steps were
/// played and the mean return of that update's episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The update, from 0.
    pub update: u64,
    /// Episodes played through this update.
    pub episodes: u64,
    /// Environment steps played through this update.
    pub steps: u64,
    /// Mean return of this update's episodes.
    pub mean_return: f64,
}

/// What a run measured (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GamesSummary {
    /// The variant, as a short label (`cartpole(gravity=12.0)`).
    pub env: String,
    /// The learner.
    pub algorithm: Algorithm,
    /// The goal's mean return.
    pub threshold: f64,
    /// Updates played.
    pub updates: usize,
    /// Episodes played.
    pub episodes: u64,
    /// Environment steps played.
    pub steps: u64,
    /// Mean return of the first rollout, before any update (the jump-start of a transfer).
    pub first_return: f64,
    /// Mean return of the last rollout.
    pub final_return: f64,
    /// Mean return over every training episode: the area under the learning curve per episode.
    pub auc: f64,
    /// Episodes played until the first rollout whose mean return reached the goal (through
    /// it); `null` if none did.
    pub episodes_to_threshold: Option<u64>,
    /// Environment steps played until then.
    pub steps_to_threshold: Option<u64>,
    /// Parameters trained.
    pub trainable_params: usize,
    /// Training wall time (s), summed over resumed parts.
    pub wall_time_s: f64,
    /// The learning curve, one point per update.
    pub curve: Vec<CurvePoint>,
    /// The saved policy.
    pub policy: PathBuf,
    /// The variant's full spec, so the policy can be played again.
    pub spec: EnvSpec,
    /// What the run took from a source policy, when it transferred one.
    pub transfer: Option<TransferSummary>,
}

/// The curve and its measures from the updates' records.
pub fn measure(records: &[UpdateRecord], threshold: f64) -> (Vec<CurvePoint>, f64, Option<(u64, u64)>) {
    let (mut episodes, mut steps, mut sum) = (0u64, 0u64, 0f64);
    let mut reached = None;
    let mut curve = Vec::with_capacity(records.len());
    for r in records {
        episodes += r.episodes.len() as u64;
        steps += r.steps as u64;
        sum += r.episodes.iter().map(|e| e.episode_return).sum::<f64>();
        if reached.is_none() && r.mean_return >= threshold {
            reached = Some((episodes, steps));
        }
        curve.push(CurvePoint { update: r.update, episodes, steps, mean_return: r.mean_return });
    }
    (curve, sum / episodes.max(1) as f64, reached)
}

/// The starting policy of a run, the parts that train and what was transferred.
fn starting_policy(
    cfg: &GamesConfig,
    device: &candle_core::Device,
) -> Result<(PolicyNet, Vec<Part>, Option<TransferSummary>)> {
    let env = cfg.env.make(cfg.seed())?;
    let (obs, actions) = (env.observation_size(), env.actions());
    let Some(t) = &cfg.transfer else {
        let fresh = PolicyNet::new(obs, actions, &cfg.model.hidden, cfg.seed(), device)?;
        return Ok((fresh, vec![Part::Input, Part::Hidden, Part::Policy, Part::Value], None));
    };
    let from = if t.from.is_dir() { t.from.join(POLICY_FILE) } else { t.from.clone() };
    let source = PolicyNet::load(&from, device)?;
    let (policy, parts, kept) = PolicyNet::transfer(&source, obs, actions, t.method, (cfg.seed(), t.lateral_rank))?;
    Ok((policy, parts, Some(TransferSummary { from, method: t.method, kept })))
}

/// Trains the config's agent with its learner — from a fresh policy (seeded with the learner's
/// `seed`) or one transferred
/// from a source variant — resuming from the output folder's newest checkpoint when `resume`,
/// and writes the policy and `summary.json`.
pub fn run(cfg: &GamesConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<GamesSummary> {
    cfg.validate()?;
    let device = parse_device(&cfg.model.device)?;
    let (policy, parts, transfer) = starting_policy(cfg, &device)?;
    let out = &cfg.output.dir;
    let per_update = cfg.steps_per_update();
    let save_every = if cfg.output.save_every == 0 { per_update } else { cfg.output.save_every };
    let run_dir = RunDir::open(out, resume, save_every)?;
    let train: Vec<(Part, f64)> = parts.into_iter().map(|p| (p, 1.0)).collect();
    let outcome = match cfg.agent.algorithm {
        Algorithm::Ppo => {
            on_event(Event::Note(format!("training a PPO agent on {}", cfg.env.label())));
            train_ppo(&cfg.env, policy, &train, &cfg.ppo, Some(run_dir), on_event)?
        }
        Algorithm::Dqn => {
            on_event(Event::Note(format!("training a DQN agent on {}", cfg.env.label())));
            train_dqn(&cfg.env, policy, &train, &cfg.dqn, Some(run_dir), on_event)?
        }
    };
    let policy_path = out.join(POLICY_FILE);
    outcome.policy.save(&policy_path)?;
    let threshold = cfg.goal.threshold.unwrap_or_else(|| default_threshold(&cfg.env));
    let (curve, auc, reached) = measure(&outcome.records, threshold);
    let summary = GamesSummary {
        env: cfg.env.label(),
        algorithm: cfg.agent.algorithm,
        threshold,
        updates: outcome.records.len(),
        episodes: curve.last().map_or(0, |c| c.episodes),
        steps: curve.last().map_or(0, |c| c.steps),
        first_return: outcome.records.first().map_or(0.0, |r| r.mean_return),
        final_return: outcome.records.last().map_or(0.0, |r| r.mean_return),
        auc,
        episodes_to_threshold: reached.map(|r| r.0),
        steps_to_threshold: reached.map(|r| r.1),
        trainable_params: outcome.trainer.trainable_params,
        wall_time_s: outcome.trainer.state.elapsed_s,
        curve,
        policy: policy_path,
        spec: cfg.env.clone(),
        transfer,
    };
    crate::io::write_atomic(&out.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

/// What [`play`] recorded.
pub struct Played {
    /// The episode's return.
    pub episode_return: f64,
    /// Its steps.
    pub length: usize,
    /// Every `every`-th frame, the first and the last.
    pub frames: Vec<image::RgbImage>,
}

/// Plays episode `episode` of `spec` (seeded `seed`) with `policy` — its most likely action at
/// every step when `greedy`, else actions sampled from the episode's stream — keeping every
/// `every`-th frame.
pub fn play(spec: &EnvSpec, seed: u64, policy: &PolicyNet, episode: u64, greedy: bool, every: usize) -> Result<Played> {
    let mut env = spec.make(seed)?;
    let mut obs = env.reset(episode);
    let mut rng = crate::data::split::rng(!seed, episode);
    let mut frames = vec![env.render()];
    let (mut total, mut length) = (0.0, 0);
    loop {
        let x = candle_core::Tensor::from_slice(&obs, (1, obs.len()), &policy.device())?;
        let logits = policy.forward(&x)?.0;
        let log_probs = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?
            .remove(0);
        let action = if greedy {
            crate::games::rollout::argmax(&log_probs)
        } else {
            crate::games::rollout::sample(&log_probs, &mut rng)
        };
        let step = env.step(action)?;
        total += step.reward as f64;
        length += 1;
        let over = step.done();
        obs = step.observation;
        if over || length % every.max(1) == 0 {
            frames.push(env.render());
        }
        if over {
            break;
        }
    }
    Ok(Played { episode_return: total, length, frames })
}
