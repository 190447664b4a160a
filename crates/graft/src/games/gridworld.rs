//! A maze family: an agent walks the floor cells of a grid (actions 0 up, 1 right, 2 down,
//! 3 left; a move into a wall or off the grid leaves it where it is) towards the goal cell. With
//! probability `slip` the chosen action is replaced by one drawn uniformly from the four (from
//! the episode's stream). Reaching the goal ends the episode with reward
//! `1 − 0.9 · steps / max_steps` (MiniGrid's), every other step gives 0.
//!
//! The observation is what the agent sees of the grid around it — a `view × view` window centred
//! on it, one channel for walls (cells off the grid count as walls) and one for the goal, row
//! by row — followed by the goal's offset from the agent (rows, columns) divided by the grid's
//! height and width: `2 · view² + 2` values. Variants of another `view` therefore have
//! observations of another size.

use super::render::Canvas;
use super::{check_step, episode_rng, Env, Step};
use crate::{GraftError, Result};
use image::RgbImage;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One maze variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridContext {
    /// The grid, one string per row: `#` wall, `.` floor, `S` the start (else a floor cell drawn
    /// per episode), `G` the goal (unless `goal` is given).
    pub layout: Vec<String>,
    /// The goal cell `[row, column]`, replacing the layout's `G`.
    pub goal: Option<[usize; 2]>,
    /// Probability that an action is replaced by a random one.
    pub slip: f64,
    /// Side of the square window the agent sees (odd, at least 1).
    pub view: usize,
    /// Steps after which an episode is truncated.
    pub max_steps: usize,
}

impl Default for GridContext {
    /// A 7 × 7 room split by a wall with one door, start top left, goal bottom right; no slip,
    /// a 5 × 5 view, 100 steps.
    fn default() -> Self {
        let layout = ["#######", "#S..#.#", "#...#.#", "#.....#", "#...#.#", "#...#G#", "#######"];
        Self { layout: layout.map(String::from).to_vec(), goal: None, slip: 0.0, view: 5, max_steps: 100 }
    }
}

/// Moves of the four actions: up, right, down, left.
const MOVES: [(isize, isize); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];

/// A parsed maze.
#[derive(Debug, Clone)]
struct Maze {
    walls: Vec<Vec<bool>>,
    start: Option<(usize, usize)>,
    goal: (usize, usize),
}

impl GridContext {
    fn maze(&self) -> Result<Maze> {
        let bad = |m: String| Err(GraftError::Input(format!("gridworld: {m}")));
        let width = self.layout.first().map_or(0, |r| r.chars().count());
        if self.layout.is_empty() || width == 0 {
            return bad("`layout` is empty".into());
        }
        let (mut walls, mut start, mut goal) = (Vec::new(), None, None);
        for (r, row) in self.layout.iter().enumerate() {
            if row.chars().count() != width {
                return bad(format!("`layout` row {r} has {} cells, row 0 has {width}", row.chars().count()));
            }
            let mut cells = Vec::with_capacity(width);
            for (c, ch) in row.chars().enumerate() {
                match ch {
                    '#' => cells.push(true),
                    '.' => cells.push(false),
                    'S' if start.is_none() => {
                        start = Some((r, c));
                        cells.push(false)
                    }
                    'G' if goal.is_none() => {
                        goal = Some((r, c));
                        cells.push(false)
                    }
                    'S' | 'G' => return bad(format!("`layout` has more than one `{ch}`")),
                    _ => return bad(format!("`layout` row {r} column {c}: `{ch}` is not one of # . S G")),
                }
            }
            walls.push(cells);
        }
        if let Some([r, c]) = self.goal {
            if walls.get(r).and_then(|row| row.get(c)) != Some(&false) {
                return bad(format!("`goal` [{r}, {c}] is not a floor cell of the layout"));
            }
            goal = Some((r, c));
        }
        let Some(goal) = goal else { return bad("no goal: put a `G` in `layout` or give `goal`".into()) };
        if start == Some(goal) {
            return bad("the start is the goal".into());
        }
        if !(0.0..=1.0).contains(&self.slip) {
            return bad(format!("`slip` must be between 0 and 1, got {}", self.slip));
        }
        if self.view == 0 || self.view.is_multiple_of(2) {
            return bad(format!("`view` must be odd and at least 1, got {}", self.view));
        }
        if self.max_steps == 0 {
            return bad("`max_steps` must be at least 1".into());
        }
        Ok(Maze { walls, start, goal })
    }

    /// Refuses a maze that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.maze().map(|_| ())
    }
}

/// A maze variant.
#[derive(Debug, Clone)]
pub struct GridWorld {
    ctx: GridContext,
    maze: Maze,
    seed: u64,
    rng: ChaCha8Rng,
    agent: (usize, usize),
    steps: usize,
    over: bool,
}

impl GridWorld {
    /// The variant `ctx`, seeded with `seed`; call [`Env::reset`] before stepping.
    pub fn new(ctx: GridContext, seed: u64) -> Result<Self> {
        let maze = ctx.maze()?;
        let agent = maze.start.unwrap_or((0, 0));
        Ok(Self { ctx, maze, seed, rng: episode_rng(seed, 0), agent, steps: 0, over: true })
    }

    /// The agent's cell `(row, column)`.
    pub fn agent(&self) -> (usize, usize) {
        self.agent
    }

    fn rows(&self) -> usize {
        self.maze.walls.len()
    }

    fn cols(&self) -> usize {
        self.maze.walls[0].len()
    }

    /// The cell one move from `at`, if it is floor.
    fn neighbour(&self, at: (usize, usize), action: usize) -> Option<(usize, usize)> {
        let (dr, dc) = MOVES[action];
        let r = at.0.checked_add_signed(dr)?;
        let c = at.1.checked_add_signed(dc)?;
        (!*self.maze.walls.get(r)?.get(c)?).then_some((r, c))
    }

    fn observation(&self) -> Vec<f32> {
        let v = self.ctx.view;
        let half = (v / 2) as isize;
        let mut walls = Vec::with_capacity(v * v);
        let mut goal = Vec::with_capacity(v * v);
        for dr in -half..=half {
            for dc in -half..=half {
                let cell = self.agent.0.checked_add_signed(dr).zip(self.agent.1.checked_add_signed(dc));
                let wall = cell.and_then(|(r, c)| self.maze.walls.get(r)?.get(c).copied()).unwrap_or(true);
                walls.push(if wall { 1.0 } else { 0.0 });
                goal.push(if cell == Some(self.maze.goal) { 1.0 } else { 0.0 });
            }
        }
        walls.extend(goal);
        walls.push((self.maze.goal.0 as f32 - self.agent.0 as f32) / self.rows() as f32);
        walls.push((self.maze.goal.1 as f32 - self.agent.1 as f32) / self.cols() as f32);
        walls
    }
}

impl Env for GridWorld {
    fn observation_size(&self) -> usize {
        2 * self.ctx.view * self.ctx.view + 2
    }

    fn actions(&self) -> usize {
        4
    }

    /// The layout's start, else a floor cell other than the goal drawn uniformly.
    fn reset(&mut self, episode: u64) -> Vec<f32> {
        self.rng = episode_rng(self.seed, episode);
        self.agent = self.maze.start.unwrap_or_else(|| {
            let floor: Vec<(usize, usize)> = (0..self.rows())
                .flat_map(|r| (0..self.cols()).map(move |c| (r, c)))
                .filter(|&(r, c)| !self.maze.walls[r][c] && (r, c) != self.maze.goal)
                .collect();
            floor[(self.rng.next_u64() % floor.len() as u64) as usize]
        });
        self.steps = 0;
        self.over = false;
        self.observation()
    }

    fn step(&mut self, action: usize) -> Result<Step> {
        check_step("gridworld", action, 4, self.over)?;
        let slipped = self.ctx.slip > 0.0 && super::uniform(&mut self.rng, 0.0, 1.0) < self.ctx.slip;
        let action = if slipped { (self.rng.next_u64() % 4) as usize } else { action };
        if let Some(cell) = self.neighbour(self.agent, action) {
            self.agent = cell;
        }
        self.steps += 1;
        let terminated = self.agent == self.maze.goal;
        let truncated = !terminated && self.steps >= self.ctx.max_steps;
        self.over = terminated || truncated;
        let reward = if terminated { 1.0 - 0.9 * self.steps as f32 / self.ctx.max_steps as f32 } else { 0.0 };
        Ok(Step { observation: self.observation(), reward, terminated, truncated })
    }

    fn max_steps(&self) -> usize {
        self.ctx.max_steps
    }

    /// 24 pixels a cell: walls dark, floor white, the goal green, the agent red.
    fn render(&self) -> RgbImage {
        let cell = 24.0;
        let mut canvas = Canvas::new((self.cols() as f64 * cell) as u32, (self.rows() as f64 * cell) as u32, [255; 3]);
        for (r, row) in self.maze.walls.iter().enumerate() {
            for (c, &wall) in row.iter().enumerate() {
                let color = if wall {
                    [60, 60, 60]
                } else if (r, c) == self.maze.goal {
                    [80, 180, 80]
                } else {
                    continue;
                };
                let (x, y) = (c as f64 * cell, r as f64 * cell);
                canvas.rect((x, y), (x + cell, y + cell), color);
            }
        }
        let (x, y) = ((self.agent.1 as f64 + 0.5) * cell, (self.agent.0 as f64 + 0.5) * cell);
        canvas.circle((x, y), cell * 0.35, [210, 50, 50]);
        canvas.into_image()
    }
}
