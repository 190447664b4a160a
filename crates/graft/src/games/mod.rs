//! Game environments for transfer between game variants: deterministic simulations whose
//! **context** parameters (gravity, pole length, masses, maze layout, slip, view size ...) define
//! a family of variants, so that an agent learned on one variant can be moved to another and the
//! transfer measured (docs/games.md).
//!
//! - [`cartpole`]: the classic cart-pole balancing task (Barto, Sutton & Anderson 1983, with the
//!   equations and constants of Gymnasium's `CartPole-v1`).
//! - [`acrobot`]: the two-link swing-up task (Sutton 1996, Gymnasium's `Acrobot-v1`): six
//!   observations and three actions, so moving a cart-pole agent to it must map both spaces.
//! - [`gridworld`]: a maze family (layout, goal, slip probability, size of the agent's view).
//! - [`render`]: frames as images, written as PNG files or one animated PNG.
//!
//! Every environment is a pure function of its context, its seed and the episode index: episode
//! `i` starts from (and, where the environment is stochastic, runs on) the ChaCha8 stream `i`
//! of the seed, so runs repeat exactly and resume at any episode boundary.

pub mod acrobot;
pub mod agent;
pub mod cartpole;
pub mod dqn;
pub mod gridworld;
pub mod policy;
pub mod ppo;
pub mod render;
pub mod rollout;
pub mod transfer;

pub use acrobot::{Acrobot, AcrobotContext};
pub use cartpole::{CartPole, CartPoleContext};
pub use gridworld::{GridContext, GridWorld};

use crate::{GraftError, Result};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What one action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The observation after the action.
    pub observation: Vec<f32>,
    /// The reward for it.
    pub reward: f32,
    /// The episode ended in a terminal state (the pole fell, the goal was reached).
    pub terminated: bool,
    /// The episode was cut at the step limit without a terminal state.
    pub truncated: bool,
}

impl Step {
    /// The episode is over, either way.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A seeded episodic environment with a vector observation and discrete actions.
pub trait Env: Send {
    /// Width of an observation.
    fn observation_size(&self) -> usize;
    /// Number of discrete actions (`0..actions()`).
    fn actions(&self) -> usize;
    /// Starts episode `episode` of the seed's series and returns its first observation; the
    /// same seed and episode always give the same start.
    fn reset(&mut self, episode: u64) -> Vec<f32>;
    /// Applies `action`. An action out of range, or a step after the episode ended, is an error.
    fn step(&mut self, action: usize) -> Result<Step>;
    /// Steps after which an episode is truncated.
    fn max_steps(&self) -> usize;
    /// The current state drawn as an image.
    fn render(&self) -> RgbImage;
}

/// Which environment, with its context: the `[env]` section of a config (`kind = "cartpole"`
/// and the context's keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvSpec {
    /// [`CartPole`].
    Cartpole(CartPoleContext),
    /// [`Acrobot`].
    Acrobot(AcrobotContext),
    /// [`GridWorld`].
    Gridworld(GridContext),
}

impl EnvSpec {
    /// The environment this spec describes, seeded with `seed`; a context that cannot run is an
    /// error naming the key.
    pub fn make(&self, seed: u64) -> Result<Box<dyn Env>> {
        Ok(match self {
            EnvSpec::Cartpole(c) => Box::new(CartPole::new(c.clone(), seed)?),
            EnvSpec::Acrobot(c) => Box::new(Acrobot::new(c.clone(), seed)?),
            EnvSpec::Gridworld(c) => Box::new(GridWorld::new(c.clone(), seed)?),
        })
    }

    /// A short name for reports: the kind and the context keys that differ from the defaults
    /// (`cartpole(gravity=12)`).
    pub fn label(&self) -> String {
        let (kind, value, default) = match self {
            EnvSpec::Cartpole(c) => ("cartpole", toml_value(c), toml_value(&CartPoleContext::default())),
            EnvSpec::Acrobot(c) => ("acrobot", toml_value(c), toml_value(&AcrobotContext::default())),
            EnvSpec::Gridworld(c) => ("gridworld", toml_value(c), toml_value(&GridContext::default())),
        };
        let changed: Vec<String> = match (value, default) {
            (toml::Value::Table(v), toml::Value::Table(d)) => {
                v.into_iter().filter(|(k, x)| d.get(k) != Some(x)).map(|(k, x)| format!("{k}={x}")).collect()
            }
            _ => Vec::new(),
        };
        if changed.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}({})", changed.join(", "))
        }
    }
}

fn toml_value<T: Serialize>(v: &T) -> toml::Value {
    toml::Value::try_from(v).unwrap_or(toml::Value::Boolean(false))
}

/// The random stream of episode `episode` of seed `seed`.
pub(crate) fn episode_rng(seed: u64, episode: u64) -> ChaCha8Rng {
    crate::data::split::rng(seed, episode)
}

/// Refuses an action outside `0..actions` or a step after the end, naming the environment.
pub(crate) fn check_step(name: &str, action: usize, actions: usize, over: bool) -> Result<()> {
    if action >= actions {
        return Err(GraftError::Input(format!("{name}: action {action} is out of range: it has {actions} actions")));
    }
    if over {
        return Err(GraftError::Input(format!("{name}: step after the episode ended: reset first")));
    }
    Ok(())
}

/// Refuses a context whose physical values are not finite and positive, or whose step limit is
/// 0, naming the key.
pub(crate) fn check_context(env: &str, values: &[(&str, f64)], max_steps: usize) -> Result<()> {
    for &(key, v) in values {
        if !(v.is_finite() && v > 0.0) {
            return Err(GraftError::Input(format!("{env}: `{key}` must be a finite number above 0, got {v}")));
        }
    }
    if max_steps == 0 {
        return Err(GraftError::Input(format!("{env}: `max_steps` must be at least 1")));
    }
    Ok(())
}

/// A uniform draw in `[low, high)` from the stream (its own arithmetic, so a `rand` release
/// cannot change an episode).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * crate::data::split::uniform(rng)
}
