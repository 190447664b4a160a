//! Training: optimizers with savable state, learning-rate schedules, and the loss helpers the
//! training loop uses.

pub mod checkpoint;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod step;
