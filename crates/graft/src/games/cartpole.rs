//! Cart-pole balancing: a pole hinged on a cart that a force of fixed size pushes left (action
//! 0) or right (action 1). Equations of motion as in Barto, Sutton & Anderson (1983) with
//! Florian's correction, integrated with explicit Euler steps of `tau` seconds — the dynamics,
//! constants, limits and rewards of Gymnasium's `CartPole-v1`: reward 1 for every step
//! including the one that ends the episode, which ends when the cart leaves ±2.4 m or the pole
//! tilts past ±12°; episodes are cut at `max_steps` (500). The context parameters are those of
//! CARL's cart-pole family.

use super::render::Canvas;
use super::{check_context, check_step, episode_rng, uniform, Env, Step};
use crate::Result;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The cart leaves the track beyond this distance from the centre (m).
pub const X_LIMIT: f64 = 2.4;
/// The pole has fallen beyond this angle (12°, in radians).
pub const THETA_LIMIT: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;

/// The physical parameters of one cart-pole variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartPoleContext {
    /// Gravitational acceleration (m/s²).
    pub gravity: f64,
    /// Mass of the cart (kg).
    pub cart_mass: f64,
    /// Mass of the pole (kg).
    pub pole_mass: f64,
    /// Half the pole's length (m): Gymnasium's `length`.
    pub pole_length: f64,
    /// Size of the push of either action (N).
    pub force: f64,
    /// Seconds per step.
    pub tau: f64,
    /// Steps after which an episode is truncated.
    pub max_steps: usize,
}

impl Default for CartPoleContext {
    /// `CartPole-v1`: gravity 9.8, cart 1.0 kg, pole 0.1 kg, half-length 0.5 m, force 10 N,
    /// 0.02 s steps, 500 steps.
    fn default() -> Self {
        Self { gravity: 9.8, cart_mass: 1.0, pole_mass: 0.1, pole_length: 0.5, force: 10.0, tau: 0.02, max_steps: 500 }
    }
}

impl CartPoleContext {
    /// Refuses parameters that cannot simulate, naming the key.
    pub fn validate(&self) -> Result<()> {
        let values = [
            ("gravity", self.gravity),
            ("cart_mass", self.cart_mass),
            ("pole_mass", self.pole_mass),
            ("pole_length", self.pole_length),
            ("force", self.force),
            ("tau", self.tau),
        ];
        check_context("cartpole", &values, self.max_steps)
    }
}

/// A cart-pole variant: the state `(x, ẋ, θ, θ̇)` in f64, observed as f32.
#[derive(Debug, Clone)]
pub struct CartPole {
    ctx: CartPoleContext,
    seed: u64,
    state: [f64; 4],
    steps: usize,
    over: bool,
}

impl CartPole {
    /// The variant `ctx`, seeded with `seed`; call [`Env::reset`] before stepping.
    pub fn new(ctx: CartPoleContext, seed: u64) -> Result<Self> {
        ctx.validate()?;
        Ok(Self { ctx, seed, state: [0.0; 4], steps: 0, over: true })
    }

    /// The state `(x, ẋ, θ, θ̇)`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Starts an episode from `state` instead of a drawn one (tests, reference trajectories).
    pub fn set_state(&mut self, state: [f64; 4]) {
        self.state = state;
        self.steps = 0;
        self.over = false;
    }

    fn observation(&self) -> Vec<f32> {
        self.state.iter().map(|&v| v as f32).collect()
    }
}

impl Env for CartPole {
    fn observation_size(&self) -> usize {
        4
    }

    fn actions(&self) -> usize {
        2
    }

    /// Each state variable uniform in [−0.05, 0.05).
    fn reset(&mut self, episode: u64) -> Vec<f32> {
        let mut rng = episode_rng(self.seed, episode);
        let state = std::array::from_fn(|_| uniform(&mut rng, -0.05, 0.05));
        self.set_state(state);
        self.observation()
    }

    fn step(&mut self, action: usize) -> Result<Step> {
        check_step("cartpole", action, 2, self.over)?;
        let c = &self.ctx;
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { c.force } else { -c.force };
        let (sin, cos) = theta.sin_cos();
        let total_mass = c.pole_mass + c.cart_mass;
        let pole_moment = c.pole_mass * c.pole_length;
        let temp = (force + pole_moment * theta_dot * theta_dot * sin) / total_mass;
        let theta_acc =
            (c.gravity * sin - cos * temp) / (c.pole_length * (4.0 / 3.0 - c.pole_mass * cos * cos / total_mass));
        let x_acc = temp - pole_moment * theta_acc * cos / total_mass;
        self.state =
            [x + c.tau * x_dot, x_dot + c.tau * x_acc, theta + c.tau * theta_dot, theta_dot + c.tau * theta_acc];
        self.steps += 1;
        let [x, _, theta, _] = self.state;
        let terminated = !(-X_LIMIT..=X_LIMIT).contains(&x) || !(-THETA_LIMIT..=THETA_LIMIT).contains(&theta);
        let truncated = !terminated && self.steps >= c.max_steps;
        self.over = terminated || truncated;
        Ok(Step { observation: self.observation(), reward: 1.0, terminated, truncated })
    }

    fn max_steps(&self) -> usize {
        self.ctx.max_steps
    }

    /// 600 × 400 pixels, the track ±2.4 m wide: the cart, the pole at its angle and length.
    fn render(&self) -> RgbImage {
        let (w, h) = (600.0, 400.0);
        let scale = w / (2.0 * X_LIMIT);
        let mut canvas = Canvas::new(w as u32, h as u32, [255, 255, 255]);
        let track = 300.0;
        canvas.line((0.0, track + 15.0), (w, track + 15.0), 1.0, [0, 0, 0]);
        let cart_x = w / 2.0 + self.state[0] * scale;
        canvas.rect((cart_x - 25.0, track - 15.0), (cart_x + 25.0, track + 15.0), [0, 0, 0]);
        let len = scale * 2.0 * self.ctx.pole_length;
        let (sin, cos) = self.state[2].sin_cos();
        let top = (cart_x + len * sin, track - 15.0 - len * cos);
        canvas.line((cart_x, track - 15.0), top, 5.0, [202, 152, 101]);
        canvas.circle((cart_x, track - 15.0), 5.0, [129, 132, 203]);
        canvas.into_image()
    }
}
