//! Training: the one loop ([`trainer::Trainer`]) and what it is built from — the objective seam
//! ([`objective::Objective`]), optimizers with parameter groups and savable state, schedules,
//! the accumulate-clip-step helper, atomic checkpoints, run directories and progress events.
//!
//! A technique that learns by gradient steps is an objective plus a batch source handed to the
//! trainer; one that does not fit the loop (an outer meta-learning loop, adversarial
//! alternation) composes the same helpers ([`step::accumulate_and_step`], [`checkpoint`]).

pub mod checkpoint;
pub mod events;
pub mod loss;
pub mod objective;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use events::{Event, StepRecord};
pub use objective::{BatchSource, Epochs, Objective, ObjectiveLoss, StepGeneration, TASK_LOSS};
pub use optim::ParamGroup;
pub use run_dir::RunDir;
pub use trainer::{Evaluation, LoopSettings, Outcome, RunSummary, Trainer};
