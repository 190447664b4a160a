//! Acrobot: two links hanging from a fixed joint, actuated only at the joint between them
//! (torque −1, 0 or +1: actions 0, 1, 2); the task is to swing the free end above the bar by
//! one link length. The equations of Sutton & Barto's book version (Sutton 1996), integrated
//! with one classic Runge-Kutta step of `dt` seconds, angles wrapped to [−π, π] and velocities
//! bounded to 4π and 9π — the dynamics, rewards and limits of Gymnasium's `Acrobot-v1`: reward
//! −1 per step and 0 on the step that reaches the goal, episodes cut at `max_steps` (500). The
//! observation is `(cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2)`: six values against the cart-pole's
//! four, and three actions against two.

use super::render::Canvas;
use super::{check_context, check_step, episode_rng, uniform, Env, Step};
use crate::Result;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Velocity bound of the first joint (rad/s).
pub const MAX_VEL_1: f64 = 4.0 * PI;
/// Velocity bound of the second joint (rad/s).
pub const MAX_VEL_2: f64 = 9.0 * PI;
const GRAVITY: f64 = 9.8;

/// The physical parameters of one acrobot variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcrobotContext {
    /// Length of the first link (m).
    pub link_length_1: f64,
    /// Length of the second link (m; drawn only: the dynamics use the centres of mass).
    pub link_length_2: f64,
    /// Mass of the first link (kg).
    pub link_mass_1: f64,
    /// Mass of the second link (kg).
    pub link_mass_2: f64,
    /// Position of the first link's centre of mass (m from its joint).
    pub link_com_1: f64,
    /// Position of the second link's centre of mass.
    pub link_com_2: f64,
    /// Moment of inertia of either link.
    pub link_moi: f64,
    /// Seconds per step.
    pub dt: f64,
    /// Steps after which an episode is truncated.
    pub max_steps: usize,
}

impl Default for AcrobotContext {
    /// `Acrobot-v1`: links of 1 m and 1 kg with centres of mass at 0.5 m and moments of inertia
    /// 1, 0.2 s steps, 500 steps.
    fn default() -> Self {
        Self {
            link_length_1: 1.0,
            link_length_2: 1.0,
            link_mass_1: 1.0,
            link_mass_2: 1.0,
            link_com_1: 0.5,
            link_com_2: 0.5,
            link_moi: 1.0,
            dt: 0.2,
            max_steps: 500,
        }
    }
}

impl AcrobotContext {
    /// Refuses parameters that cannot simulate, naming the key.
    pub fn validate(&self) -> Result<()> {
        let values = [
            ("link_length_1", self.link_length_1),
            ("link_length_2", self.link_length_2),
            ("link_mass_1", self.link_mass_1),
            ("link_mass_2", self.link_mass_2),
            ("link_com_1", self.link_com_1),
            ("link_com_2", self.link_com_2),
            ("link_moi", self.link_moi),
            ("dt", self.dt),
        ];
        check_context("acrobot", &values, self.max_steps)
    }

    /// Time derivative of `(θ1, θ2, θ̇1, θ̇2)` under joint torque `a`.
    fn derivative(&self, s: [f64; 4], a: f64) -> [f64; 4] {
        let (m1, m2, l1) = (self.link_mass_1, self.link_mass_2, self.link_length_1);
        let (lc1, lc2, i1, i2) = (self.link_com_1, self.link_com_2, self.link_moi, self.link_moi);
        let [t1, t2, dt1, dt2] = s;
        // Grouped as Gymnasium writes them (squares first), so the rounding is the same.
        let sq = |v: f64| v * v;
        let d1 = m1 * sq(lc1) + m2 * (sq(l1) + sq(lc2) + 2.0 * l1 * lc2 * t2.cos()) + i1 + i2;
        let d2 = m2 * (sq(lc2) + l1 * lc2 * t2.cos()) + i2;
        let phi2 = m2 * lc2 * GRAVITY * (t1 + t2 - PI / 2.0).cos();
        let phi1 = -m2 * l1 * lc2 * sq(dt2) * t2.sin() - 2.0 * m2 * l1 * lc2 * dt2 * dt1 * t2.sin()
            + (m1 * lc1 + m2 * l1) * GRAVITY * (t1 - PI / 2.0).cos()
            + phi2;
        let ddt2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * sq(dt1) * t2.sin() - phi2) / (m2 * sq(lc2) + i2 - sq(d2) / d1);
        let ddt1 = -(d2 * ddt2 + phi1) / d1;
        [dt1, dt2, ddt1, ddt2]
    }
}

/// An acrobot variant: the state `(θ1, θ2, θ̇1, θ̇2)` in f64.
#[derive(Debug, Clone)]
pub struct Acrobot {
    ctx: AcrobotContext,
    seed: u64,
    state: [f64; 4],
    steps: usize,
    over: bool,
}

impl Acrobot {
    /// The variant `ctx`, seeded with `seed`; call [`Env::reset`] before stepping.
    pub fn new(ctx: AcrobotContext, seed: u64) -> Result<Self> {
        ctx.validate()?;
        Ok(Self { ctx, seed, state: [0.0; 4], steps: 0, over: true })
    }

    /// The state `(θ1, θ2, θ̇1, θ̇2)`.
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
        let [t1, t2, d1, d2] = self.state;
        [t1.cos(), t1.sin(), t2.cos(), t2.sin(), d1, d2].iter().map(|&v| v as f32).collect()
    }
}

/// `x` wrapped into `[low, high]` by whole turns.
fn wrap(mut x: f64, low: f64, high: f64) -> f64 {
    let span = high - low;
    while x > high {
        x -= span;
    }
    while x < low {
        x += span;
    }
    x
}

impl Env for Acrobot {
    fn observation_size(&self) -> usize {
        6
    }

    fn actions(&self) -> usize {
        3
    }

    /// Each state variable uniform in [−0.1, 0.1), rounded to f32 as Gymnasium stores it.
    fn reset(&mut self, episode: u64) -> Vec<f32> {
        let mut rng = episode_rng(self.seed, episode);
        let state = std::array::from_fn(|_| uniform(&mut rng, -0.1, 0.1) as f32 as f64);
        self.set_state(state);
        self.observation()
    }

    fn step(&mut self, action: usize) -> Result<Step> {
        check_step("acrobot", action, 3, self.over)?;
        let torque = action as f64 - 1.0;
        let (s, h) = (self.state, self.ctx.dt);
        let f = |s: [f64; 4]| self.ctx.derivative(s, torque);
        let add = |s: [f64; 4], k: [f64; 4], by: f64| std::array::from_fn::<f64, 4, _>(|i| s[i] + by * k[i]);
        let k1 = f(s);
        let k2 = f(add(s, k1, h / 2.0));
        let k3 = f(add(s, k2, h / 2.0));
        let k4 = f(add(s, k3, h));
        let mut next: [f64; 4] = std::array::from_fn(|i| s[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]));
        next[0] = wrap(next[0], -PI, PI);
        next[1] = wrap(next[1], -PI, PI);
        next[2] = next[2].clamp(-MAX_VEL_1, MAX_VEL_1);
        next[3] = next[3].clamp(-MAX_VEL_2, MAX_VEL_2);
        self.state = next;
        self.steps += 1;
        let terminated = -next[0].cos() - (next[1] + next[0]).cos() > 1.0;
        let truncated = !terminated && self.steps >= self.ctx.max_steps;
        self.over = terminated || truncated;
        Ok(Step { observation: self.observation(), reward: if terminated { 0.0 } else { -1.0 }, terminated, truncated })
    }

    fn max_steps(&self) -> usize {
        self.ctx.max_steps
    }

    /// 500 × 500 pixels: the bar at the goal height, the two links from the fixed joint.
    fn render(&self) -> RgbImage {
        let size = 500.0;
        let (l1, l2) = (self.ctx.link_length_1, self.ctx.link_length_2);
        let scale = size / (2.2 * (l1 + l2));
        let mut canvas = Canvas::new(size as u32, size as u32, [255, 255, 255]);
        let origin = (size / 2.0, size / 2.0);
        canvas.line((0.0, origin.1 - scale * l1), (size, origin.1 - scale * l1), 1.0, [0, 0, 0]);
        let [t1, t2, _, _] = self.state;
        // θ = 0 hangs straight down; angles grow counter-clockwise.
        let p1 = (origin.0 + scale * l1 * t1.sin(), origin.1 + scale * l1 * t1.cos());
        let p2 = (p1.0 + scale * l2 * (t1 + t2).sin(), p1.1 + scale * l2 * (t1 + t2).cos());
        canvas.line(origin, p1, 5.0, [0, 204, 204]);
        canvas.line(p1, p2, 5.0, [0, 204, 204]);
        canvas.circle(origin, 5.0, [204, 204, 0]);
        canvas.circle(p1, 5.0, [204, 204, 0]);
        canvas.into_image()
    }
}
