//! Multitask learning's math: which task a step trains on ([`sampler`]), how task losses make
//! one loss ([`weighting`]), and how per-task gradients make one update ([`pcgrad`](mod@pcgrad)); and the
//! bank of per-task adapters ([`adapters`]).
//!
//! These are the parts a multitask objective and recipe are built from; the formulas and what
//! exists are in docs/multitask.md.

pub mod adapters;
pub mod pcgrad;
pub mod sampler;
pub mod weighting;

pub use adapters::{TaskAdapters, TaskTag, TASK_FILE};
pub use pcgrad::{pcgrad, pcgrad_coefficients, pcgrad_flat, pcgrad_step};
pub use sampler::{Mixing, TaskSampler, TaskSize};
pub use weighting::{LossWeighting, Weighting};
