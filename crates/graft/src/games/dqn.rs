//! Deep Q-learning (Mnih et al. 2015) on the one [`Trainer`](crate::train::Trainer): the actor of a [`PolicyNet`]
//! read as Q-values (its trunk and policy head; the critic is not used), a replay buffer, a
//! target network synced every `target_update` optimizer steps, the Huber loss of the one-step
//! target `r + γ (1 − terminal) max_a' Q_target(s', a')` (or Double DQN's
//! `Q_target(s', argmax_a' Q(s', a'))`). Each update first plays whole episodes ε-greedily with
//! the current network (ε falling linearly over the first `exploration_fraction` of the updates)
//! into the buffer, then takes `train_steps` optimizer steps on uniform draws from it.
//!
//! The replay buffer, the target network, and which update last played are the objective's
//! buffers, so every checkpoint holds them: a killed run resumes bit for bit.

use super::agent::{bind_run, trainer, AgentOutcome};
use super::policy::{Part, PolicyNet};
use super::rollout::{collect, Acting, RolloutLog, RolloutPlan, UpdateRecord};
use super::EnvSpec;
use crate::train::step::LossSum;
use crate::train::{BatchSource, Event, Objective, ObjectiveLoss, ParamGroup, RunDir};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var, D};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// DQN's settings (the `[dqn]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    /// Updates: each plays episodes into the buffer, then trains.
    pub updates: usize,
    /// Environment copies played in lockstep.
    pub envs: usize,
    /// Transitions (whole episodes) played per update.
    pub steps_per_update: usize,
    /// The first update plays until the buffer holds at least this many transitions.
    pub learning_starts: usize,
    /// Optimizer steps per update.
    pub train_steps: usize,
    /// Transitions per optimizer step.
    pub batch_size: usize,
    /// Transitions the buffer keeps (the oldest are overwritten).
    pub buffer_size: usize,
    /// Optimizer steps between syncs of the target network.
    pub target_update: usize,
    /// Discount γ.
    pub gamma: f64,
    /// Adam learning rate (constant).
    pub lr: f64,
    /// ε at the first update.
    pub epsilon_start: f64,
    /// ε from the end of exploration on.
    pub epsilon_end: f64,
    /// Share of the updates over which ε falls linearly.
    pub exploration_fraction: f64,
    /// Double DQN targets.
    pub double: bool,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Seed of the network, the episodes, the exploration and the draws.
    pub seed: u64,
}

impl Default for DqnConfig {
    /// 200 updates of 256 steps on one copy (1,000 before learning starts), 128 optimizer steps
    /// of 64 transitions each, a buffer of 50,000, target sync every 10 steps, γ 0.99, Adam
    /// 2.3e-3, ε 1 → 0.04 over the first 16 % of updates, plain DQN targets, clip 10, seed 0
    /// (the shape of RL Zoo's cart-pole DQN).
    fn default() -> Self {
        Self {
            updates: 200,
            envs: 1,
            steps_per_update: 256,
            learning_starts: 1000,
            train_steps: 128,
            batch_size: 64,
            buffer_size: 50_000,
            target_update: 10,
            gamma: 0.99,
            lr: 2.3e-3,
            epsilon_start: 1.0,
            epsilon_end: 0.04,
            exploration_fraction: 0.16,
            double: false,
            max_grad_norm: 10.0,
            seed: 0,
        }
    }
}

impl DqnConfig {
    /// Refuses settings that cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(GraftError::Input(format!("dqn: {m}")));
        if [self.updates, self.envs, self.steps_per_update, self.train_steps, self.batch_size, self.target_update]
            .contains(&0)
        {
            return bad("`updates`, `envs`, `steps_per_update`, `train_steps`, `batch_size` and `target_update` must be at least 1");
        }
        if self.buffer_size < self.learning_starts.max(self.steps_per_update) {
            return bad("`buffer_size` must hold `learning_starts` and `steps_per_update` transitions");
        }
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !(self.lr > 0.0
            && unit(self.gamma)
            && unit(self.epsilon_start)
            && unit(self.epsilon_end)
            && unit(self.exploration_fraction))
        {
            return bad("`lr` must be above 0; `gamma`, the epsilons and `exploration_fraction` between 0 and 1");
        }
        Ok(())
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        (self.updates * self.train_steps) as u64
    }

    /// ε of update `u`.
    pub fn epsilon(&self, u: u64) -> f64 {
        let span = (self.exploration_fraction * self.updates as f64).max(1.0);
        let f = (u as f64 / span).min(1.0);
        self.epsilon_start + f * (self.epsilon_end - self.epsilon_start)
    }
}

/// A batch of transitions drawn from the buffer.
#[derive(Debug, Clone)]
pub struct Transitions {
    /// `[m, width]`.
    pub observations: Tensor,
    /// `[m]` (u32).
    pub actions: Tensor,
    /// `[m]`.
    pub rewards: Tensor,
    /// The observations after the actions `[m, width]`.
    pub next_observations: Tensor,
    /// 1 where the transition ended its episode in a terminal state, else 0 `[m]`.
    pub terminal: Tensor,
}

/// The replay buffer as checkpoint buffers (host copies kept beside them).
struct Replay {
    width: usize,
    capacity: usize,
    obs: Var,
    next: Var,
    action: Var,
    reward: Var,
    terminal: Var,
    /// `[size, write position, last update played]`.
    meta: Var,
}

/// The DQN loss of a Q-network whose parts `train` learn.
pub struct DqnObjective {
    net: PolicyNet,
    groups: Vec<ParamGroup>,
    target: PolicyNet,
    target_vars: Vec<(String, Var)>,
    replay: Replay,
    gamma: f64,
    double: bool,
}

impl DqnObjective {
    /// The objective over `net` (its actor read as Q-values), training the parts `train` (the
    /// critic's tensors never train).
    pub fn new(mut net: PolicyNet, train: &[(Part, f64)], cfg: &DqnConfig) -> Result<Self> {
        cfg.validate()?;
        let mut groups = Vec::new();
        for &(part, lr_scale) in train {
            let vars = net.trainable_where(|n| PolicyNet::part_of(n) == part && !PolicyNet::is_critic(n))?;
            if !vars.is_empty() {
                groups.push(ParamGroup { lr_scale, ..ParamGroup::new(&format!("{part:?}").to_lowercase(), vars) });
            }
        }
        if groups.is_empty() {
            return Err(GraftError::Input("dqn: nothing of the Q-network trains".into()));
        }
        let mut target = net.snapshot()?;
        let mut target_vars = Vec::new();
        for (name, t) in target.named_tensors() {
            let var = Var::from_tensor(&t)?;
            target = target.with_tensor(&name, var.as_tensor().detach())?;
            target_vars.push((format!("target.{name}"), var));
        }
        let (device, w, cap) = (net.device(), net.observations(), cfg.buffer_size);
        let zeros =
            |shape: &[usize]| -> Result<Var> { Ok(Var::from_tensor(&Tensor::zeros(shape, DType::F32, &device)?)?) };
        let replay = Replay {
            width: w,
            capacity: cap,
            obs: zeros(&[cap, w])?,
            next: zeros(&[cap, w])?,
            action: zeros(&[cap])?,
            reward: zeros(&[cap])?,
            terminal: zeros(&[cap])?,
            meta: Var::from_tensor(&Tensor::new(&[0f64, 0.0, -1.0], &device)?)?,
        };
        Ok(Self { net, groups, target, target_vars, replay, gamma: cfg.gamma, double: cfg.double })
    }

    /// The Q-network being trained (its tensors follow training).
    pub fn net(&self) -> &PolicyNet {
        &self.net
    }

    /// Copies the live network into the target network.
    fn sync_target(&self) -> Result<()> {
        let live: std::collections::BTreeMap<String, Tensor> = self.net.named_tensors().into_iter().collect();
        for (name, var) in &self.target_vars {
            var.set(&live[name.trim_start_matches("target.")].detach())?;
        }
        Ok(())
    }
}

impl Objective for DqnObjective {
    type Batch = Transitions;

    fn param_groups(&self) -> Vec<ParamGroup> {
        self.groups.clone()
    }

    /// Per transition: the Huber loss (δ = 1) of `Q(s, a) − (r + γ (1 − terminal) Q̂(s'))`.
    fn loss(&self, b: &Transitions, _micro_step: u64) -> Result<ObjectiveLoss> {
        let outputs = self.net.action_outputs(&b.observations)?;
        let q = outputs.gather(&b.actions.unsqueeze(1)?, 1)?.squeeze(1)?;
        let next_target = self.target.action_outputs(&b.next_observations)?;
        let next = if self.double {
            let best = self.net.action_outputs(&b.next_observations)?.detach().argmax_keepdim(D::Minus1)?;
            next_target.gather(&best, 1)?.squeeze(1)?
        } else {
            next_target.max(D::Minus1)?
        };
        let keep = b.terminal.affine(-1.0, 1.0)?;
        let y = (&b.rewards + (next * keep)?.affine(self.gamma, 0.0)?)?.detach();
        let diff = (q - y)?.abs()?;
        let quad = diff.clamp(0.0, 1.0)?;
        let huber = ((quad.sqr()? * 0.5)? + (&diff - &quad)?)?;
        let count = b.actions.dim(0)?;
        let max_q = outputs.detach().max(D::Minus1)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(ObjectiveLoss {
            loss: LossSum { sum: huber.sum_all()?, count, sink: None },
            metrics: vec![("max_q", max_q)],
        })
    }

    fn batch_size(&self, b: &Transitions) -> usize {
        b.actions.dims1().unwrap_or(0)
    }

    /// The target network, the replay buffer and its bookkeeping.
    fn buffers(&self) -> Vec<(String, Var)> {
        let r = &self.replay;
        let mut out = self.target_vars.clone();
        for (name, v) in [
            ("replay.observations", &r.obs),
            ("replay.next_observations", &r.next),
            ("replay.actions", &r.action),
            ("replay.rewards", &r.reward),
            ("replay.terminal", &r.terminal),
            ("replay.meta", &r.meta),
        ] {
            out.push((name.to_string(), v.clone()));
        }
        out
    }
}

/// The trainer's micro-batches: step `i` of update `i / train_steps`, drawn from the buffer after
/// that update has played.
pub struct DqnSource<'a> {
    objective: &'a DqnObjective,
    spec: EnvSpec,
    cfg: DqnConfig,
    log: RolloutLog,
    /// Host copies of the buffer's tensors, read from the checkpoint's buffers on first use.
    host: Option<HostReplay>,
}

struct HostReplay {
    obs: Vec<f32>,
    next: Vec<f32>,
    action: Vec<f32>,
    reward: Vec<f32>,
    terminal: Vec<f32>,
    size: usize,
    pos: usize,
    played: i64,
}

impl<'a> DqnSource<'a> {
    /// Batches for `objective` on `spec`; with `log`, each update's record is appended once.
    pub fn new(
        objective: &'a DqnObjective,
        spec: EnvSpec,
        cfg: DqnConfig,
        log: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        Ok(Self { objective, spec, cfg, log: RolloutLog::open(log)?, host: None })
    }

    /// Every update's record so far.
    pub fn records(&self) -> &[UpdateRecord] {
        self.log.records()
    }

    fn host(&mut self) -> Result<&mut HostReplay> {
        if self.host.is_none() {
            let r = &self.objective.replay;
            let flat = |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?) };
            let meta = r.meta.as_tensor().to_vec1::<f64>()?;
            self.host = Some(HostReplay {
                obs: flat(&r.obs)?,
                next: flat(&r.next)?,
                action: flat(&r.action)?,
                reward: flat(&r.reward)?,
                terminal: flat(&r.terminal)?,
                size: meta[0] as usize,
                pos: meta[1] as usize,
                played: meta[2] as i64,
            });
        }
        Ok(self.host.as_mut().expect("set above"))
    }

    /// Plays update `u` into the buffer unless it has played.
    fn play(&mut self, u: u64) -> Result<()> {
        if self.host()?.played >= u as i64 {
            return Ok(());
        }
        let min_steps =
            if u == 0 { self.cfg.steps_per_update.max(self.cfg.learning_starts) } else { self.cfg.steps_per_update };
        let plan = RolloutPlan {
            envs: self.cfg.envs,
            min_steps,
            gamma: self.cfg.gamma,
            lambda: 1.0,
            acting: Acting::EpsilonGreedy(self.cfg.epsilon(u)),
        };
        let rollout = collect(&self.spec, self.cfg.seed, &self.objective.net, u, plan)?;
        self.log.record(u, &rollout)?;
        let objective = self.objective;
        let (w, cap) = (objective.replay.width, objective.replay.capacity);
        let h = self.host()?;
        for t in 0..rollout.len() {
            let p = h.pos;
            h.obs[p * w..(p + 1) * w].copy_from_slice(&rollout.observations[t * w..(t + 1) * w]);
            h.next[p * w..(p + 1) * w].copy_from_slice(&rollout.next_observations[t * w..(t + 1) * w]);
            h.action[p] = rollout.actions[t] as f32;
            h.reward[p] = rollout.rewards[t];
            h.terminal[p] = if rollout.terminal[t] { 1.0 } else { 0.0 };
            h.pos = (p + 1) % cap;
            h.size = (h.size + 1).min(cap);
        }
        h.played = u as i64;
        let r = &objective.replay;
        let device = r.meta.as_tensor().device().clone();
        r.obs.set(&Tensor::from_slice(&h.obs, (cap, w), &device)?)?;
        r.next.set(&Tensor::from_slice(&h.next, (cap, w), &device)?)?;
        r.action.set(&Tensor::from_slice(&h.action, cap, &device)?)?;
        r.reward.set(&Tensor::from_slice(&h.reward, cap, &device)?)?;
        r.terminal.set(&Tensor::from_slice(&h.terminal, cap, &device)?)?;
        r.meta.set(&Tensor::new(&[h.size as f64, h.pos as f64, h.played as f64], &device)?)?;
        Ok(())
    }
}

impl BatchSource<Transitions> for DqnSource<'_> {
    fn batch(&mut self, index: u64) -> Result<Transitions> {
        let u = index / self.cfg.train_steps as u64;
        self.play(u)?;
        if index.is_multiple_of(self.cfg.target_update as u64) {
            self.objective.sync_target()?;
        }
        let (m, seed, w) = (self.cfg.batch_size, self.cfg.seed, self.objective.replay.width);
        let (device, dtype) = (self.objective.net.device(), self.objective.net.dtype());
        let h = self.host()?;
        let mut rng = crate::data::split::rng(seed ^ 0xD0_u64.rotate_left(56), index);
        let rows: Vec<usize> = (0..m).map(|_| (rng.next_u64() % h.size as u64) as usize).collect();
        let gather =
            |v: &[f32]| -> Vec<f32> { rows.iter().flat_map(|&i| v[i * w..(i + 1) * w].iter().copied()).collect() };
        let pick = |v: &[f32]| -> Vec<f32> { rows.iter().map(|&i| v[i]).collect() };
        let t = |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, shape, &device)?.to_dtype(dtype)?)
        };
        Ok(Transitions {
            observations: t(gather(&h.obs), &[m, w])?,
            actions: Tensor::from_vec(rows.iter().map(|&i| h.action[i] as u32).collect::<Vec<u32>>(), m, &device)?,
            rewards: t(pick(&h.reward), &[m])?,
            next_observations: t(gather(&h.next), &[m, w])?,
            terminal: t(pick(&h.terminal), &[m])?,
        })
    }
}

/// Trains `net` (the parts `train`) with DQN on `spec` for `cfg.updates` updates; with
/// `run_dir`, checkpoints, `metrics.jsonl` and `rollouts.jsonl` go there and an interrupted
/// run resumes exactly.
pub fn train_dqn(
    spec: &EnvSpec,
    net: PolicyNet,
    train: &[(Part, f64)],
    cfg: &DqnConfig,
    run_dir: Option<RunDir>,
    on_event: &mut dyn FnMut(Event),
) -> Result<AgentOutcome> {
    let objective = DqnObjective::new(net, train, cfg)?;
    let (run_dir, log) = bind_run(run_dir, spec, "dqn", cfg, train)?;
    let mut source = DqnSource::new(&objective, spec.clone(), cfg.clone(), log)?;
    let trainer = trainer(cfg.total_steps(), cfg.lr, cfg.max_grad_norm, run_dir);
    let outcome = trainer.run(&objective, &mut source, on_event)?;
    let records = source.records().to_vec();
    Ok(AgentOutcome { policy: objective.net().snapshot()?, records, trainer: outcome })
}
