//! Experience for on-policy learning: complete episodes played by a fixed policy on several
//! copies of an environment in lockstep, with generalised advantage estimates (Schulman et al.
//! 2016). A rollout is a pure function of the policy, the seed and the rollout's index —
//! episode `e` of copy `c` in rollout `u` is the environment's episode `u·2²⁴ + c·2¹² + e`,
//! and the actions are drawn from streams of the seed — so a resumed run plays the same
//! episodes again.

use super::policy::PolicyNet;
use super::{episode_rng, uniform, EnvSpec};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, D};

/// How one played episode went.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpisodeStats {
    /// The environment's episode index.
    pub episode: u64,
    /// Sum of its rewards.
    pub episode_return: f64,
    /// Its steps.
    pub length: usize,
    /// It ended in a terminal state (not at the step limit).
    pub terminated: bool,
}

/// Transitions of complete episodes, episode by episode, with their advantages and returns.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Observations `[n · width]`, row by row.
    pub observations: Vec<f32>,
    /// Observation width.
    pub width: usize,
    /// The action taken at each transition.
    pub actions: Vec<u32>,
    /// Its log-probability under the policy that played.
    pub log_probs: Vec<f32>,
    /// That policy's value estimate of the state (0 when acting ε-greedily: the critic is not
    /// run).
    pub values: Vec<f32>,
    /// Generalised advantage estimates (0 when acting ε-greedily).
    pub advantages: Vec<f32>,
    /// Value targets: advantage plus value (0 when acting ε-greedily).
    pub returns: Vec<f32>,
    /// The observation after each transition `[n · width]` (value-based learners bootstrap
    /// from it).
    pub next_observations: Vec<f32>,
    /// The reward of each transition.
    pub rewards: Vec<f32>,
    /// Whether the transition ended its episode in a terminal state (nothing to bootstrap).
    pub terminal: Vec<bool>,
    /// The episodes, in the order their transitions appear.
    pub episodes: Vec<EpisodeStats>,
}

impl Rollout {
    /// Transitions in the rollout.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether it has no transition.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Mean return of its episodes.
    pub fn mean_return(&self) -> f64 {
        self.episodes.iter().map(|e| e.episode_return).sum::<f64>() / self.episodes.len().max(1) as f64
    }
}

/// Advantage estimates `Â_t = Σ_k (γλ)^k δ_{t+k}` with `δ_t = r_t + γ V_{t+1} − V_t` over one
/// episode's `rewards` and `values`, `last_value` standing for the value after its last step (0
/// when the episode terminated, the value of the final state when it was cut at the step
/// limit); returns `(advantages, returns = advantages + values)`.
pub fn gae(rewards: &[f32], values: &[f32], last_value: f32, gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next_adv = 0f64;
    let mut next_value = last_value as f64;
    for t in (0..n).rev() {
        let delta = rewards[t] as f64 + gamma * next_value - values[t] as f64;
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv as f32;
        next_value = values[t] as f64;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// How actions are chosen from the network's outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acting {
    /// Sampled from the softmax of the outputs (a policy's logits).
    Sample,
    /// A uniformly random action with probability ε, else the largest output (Q-values); the
    /// critic is not run.
    EpsilonGreedy(f64),
}

/// What [`collect`] plays.
#[derive(Debug, Clone, Copy)]
pub struct RolloutPlan {
    /// Copies of the environment played in lockstep.
    pub envs: usize,
    /// A copy starts no new episode once the rollout holds this many transitions.
    pub min_steps: usize,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub lambda: f64,
    /// How actions are chosen.
    pub acting: Acting,
}

/// One copy's episode in progress.
struct Playing {
    env: Box<dyn super::Env>,
    obs: Vec<f32>,
    episode: u64,
    started: u64,
    rng: rand_chacha::ChaCha8Rng,
    rewards: Vec<f32>,
    trail: Rollout,
    active: bool,
}

/// Plays rollout `index` of `spec` seeded `seed` with `policy` (actions sampled from its
/// softmax): every copy plays whole episodes until the rollout holds `plan.min_steps`
/// transitions, then finishes the one it is in.
pub fn collect(spec: &EnvSpec, seed: u64, policy: &PolicyNet, index: u64, plan: RolloutPlan) -> Result<Rollout> {
    if plan.envs == 0 || plan.envs >= 1 << 12 || plan.min_steps == 0 {
        return Err(GraftError::Input(format!(
            "a rollout needs 1 to 4095 environment copies and at least one step, got {} and {}",
            plan.envs, plan.min_steps
        )));
    }
    let device = policy.device();
    let width = policy.observations();
    let empty = || Rollout {
        observations: Vec::new(),
        width,
        actions: Vec::new(),
        log_probs: Vec::new(),
        values: Vec::new(),
        advantages: Vec::new(),
        returns: Vec::new(),
        next_observations: Vec::new(),
        rewards: Vec::new(),
        terminal: Vec::new(),
        episodes: Vec::new(),
    };
    let mut copies = Vec::with_capacity(plan.envs);
    for c in 0..plan.envs as u64 {
        let mut env = spec.make(seed)?;
        if env.observation_size() != width || env.actions() != policy.actions() {
            return Err(GraftError::Input(format!(
                "the policy reads {width} observations and picks among {} actions; {} has {} and {}",
                policy.actions(),
                spec.label(),
                env.observation_size(),
                env.actions()
            )));
        }
        let episode = (index << 24) | (c << 12);
        let obs = env.reset(episode);
        let rng = episode_rng(!seed, episode);
        copies.push(Playing { env, obs, episode, started: 0, rng, rewards: Vec::new(), trail: empty(), active: true });
    }
    let mut done = empty();
    let mut total = 0usize;
    while copies.iter().any(|p| p.active) {
        let live: Vec<usize> = (0..copies.len()).filter(|&i| copies[i].active).collect();
        let obs: Vec<f32> = live.iter().flat_map(|&i| copies[i].obs.iter().copied()).collect();
        let x = Tensor::from_vec(obs, (live.len(), width), &device)?.to_dtype(policy.dtype())?;
        // A value-based learner acts on the actor's outputs alone: its critic is neither run nor
        // used (values and advantages stay zero).
        let (logits, values) = match plan.acting {
            Acting::Sample => {
                let (logits, values) = policy.forward(&x)?;
                (logits, values.to_dtype(DType::F32)?.to_vec1::<f32>()?)
            }
            Acting::EpsilonGreedy(_) => (policy.action_outputs(&x)?, vec![0.0; live.len()]),
        };
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (row, &i) in live.iter().enumerate() {
            let p = &mut copies[i];
            let action = match plan.acting {
                Acting::Sample => sample(&log_probs[row], &mut p.rng),
                Acting::EpsilonGreedy(eps) => {
                    let explore = uniform(&mut p.rng, 0.0, 1.0) < eps;
                    let random = (uniform(&mut p.rng, 0.0, 1.0) * log_probs[row].len() as f64) as usize;
                    if explore {
                        random.min(log_probs[row].len() - 1)
                    } else {
                        argmax(&log_probs[row])
                    }
                }
            };
            p.trail.observations.extend_from_slice(&p.obs);
            p.trail.actions.push(action as u32);
            p.trail.log_probs.push(log_probs[row][action]);
            p.trail.values.push(values[row]);
            let step = p.env.step(action)?;
            p.rewards.push(step.reward);
            total += 1;
            let over = step.done();
            p.trail.next_observations.extend_from_slice(&step.observation);
            p.trail.rewards.push(step.reward);
            p.trail.terminal.push(step.terminated);
            p.obs = step.observation;
            if over {
                let (adv, ret) = match plan.acting {
                    Acting::Sample => {
                        let last_value = if step.terminated { 0.0 } else { value_of(policy, &p.obs, &device)? };
                        gae(&p.rewards, &p.trail.values, last_value, plan.gamma, plan.lambda)
                    }
                    Acting::EpsilonGreedy(_) => (vec![0.0; p.rewards.len()], vec![0.0; p.rewards.len()]),
                };
                let episode_return = p.rewards.iter().map(|&r| r as f64).sum();
                let stats = EpisodeStats {
                    episode: p.episode,
                    episode_return,
                    length: p.rewards.len(),
                    terminated: step.terminated,
                };
                let trail = std::mem::replace(&mut p.trail, empty());
                done.observations.extend(trail.observations);
                done.actions.extend(trail.actions);
                done.log_probs.extend(trail.log_probs);
                done.values.extend(trail.values);
                done.advantages.extend(adv);
                done.returns.extend(ret);
                done.next_observations.extend(trail.next_observations);
                done.rewards.extend(trail.rewards);
                done.terminal.extend(trail.terminal);
                done.episodes.push(stats);
                p.rewards.clear();
                if total >= plan.min_steps {
                    p.active = false;
                } else {
                    p.started += 1;
                    if p.started >= 1 << 12 {
                        return Err(GraftError::Input(
                            "a rollout copy played 4096 episodes: use more copies (envs) or fewer steps per rollout"
                                .into(),
                        ));
                    }
                    p.episode = (index << 24) | ((i as u64) << 12) | p.started;
                    p.obs = p.env.reset(p.episode);
                    p.rng = episode_rng(!seed, p.episode);
                }
            }
        }
    }
    Ok(done)
}

/// The index of the largest value (the first of ties).
pub(crate) fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (a, &v)| if v > values[best] { a } else { best })
}

/// An action drawn from `log_probs` with one uniform draw of `rng` (inverse CDF).
pub(crate) fn sample(log_probs: &[f32], rng: &mut rand_chacha::ChaCha8Rng) -> usize {
    let u = uniform(rng, 0.0, 1.0);
    let mut acc = 0.0f64;
    for (a, lp) in log_probs.iter().enumerate() {
        acc += (*lp as f64).exp();
        if u < acc {
            return a;
        }
    }
    log_probs.len() - 1
}

/// The policy's value of one observation.
fn value_of(policy: &PolicyNet, obs: &[f32], device: &candle_core::Device) -> Result<f32> {
    let x = Tensor::from_slice(obs, (1, obs.len()), device)?.to_dtype(policy.dtype())?;
    Ok(policy.forward(&x)?.1.to_dtype(DType::F32)?.to_vec1::<f32>()?[0])
}

/// What one update's rollout played (a line of [`ROLLOUTS_FILE`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateRecord {
    /// The update (rollout) index, from 0.
    pub update: u64,
    /// Transitions in the rollout.
    pub steps: usize,
    /// Mean return of its episodes.
    pub mean_return: f64,
    /// Its episodes.
    pub episodes: Vec<EpisodeStats>,
}

/// The file of [`UpdateRecord`]s in a run folder, one line per update.
pub const ROLLOUTS_FILE: &str = "rollouts.jsonl";

/// Every update's record, kept in memory and, with a file, appended to it once: a resumed run
/// that plays an update again does not log it twice.
pub struct RolloutLog {
    records: Vec<UpdateRecord>,
    path: Option<std::path::PathBuf>,
}

impl RolloutLog {
    /// A log continuing the records already in `path` (when given and present).
    pub fn open(path: Option<std::path::PathBuf>) -> Result<Self> {
        let records = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|e| GraftError::io(p, e))?;
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        serde_json::from_str(l)
                            .map_err(|e| GraftError::Input(format!("{}:{}: {e}", p.display(), i + 1)))
                    })
                    .collect::<Result<_>>()?
            }
            _ => Vec::new(),
        };
        Ok(Self { records, path })
    }

    /// Records `rollout` as update `update` unless it is recorded already.
    pub fn record(&mut self, update: u64, rollout: &Rollout) -> Result<()> {
        if self.records.last().is_some_and(|r| r.update >= update) {
            return Ok(());
        }
        let record = UpdateRecord {
            update,
            steps: rollout.len(),
            mean_return: rollout.mean_return(),
            episodes: rollout.episodes.clone(),
        };
        if let Some(path) = &self.path {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| GraftError::io(path, e))?;
            writeln!(f, "{}", serde_json::to_string(&record)?).map_err(|e| GraftError::io(path, e))?;
        }
        self.records.push(record);
        Ok(())
    }

    /// The records so far, in update order.
    pub fn records(&self) -> &[UpdateRecord] {
        &self.records
    }
}
