//! Continual learning: what a sequence of tasks does to a model, measured from the accuracy
//! matrix (score on every task after each stage). [`metrics`] holds the formulas;
//! `recipes::continual` (`graft continual`) trains the stages and fills the matrix.

pub mod metrics;

pub use metrics::{ContinualMetrics, Direction, ScoreMatrix};
