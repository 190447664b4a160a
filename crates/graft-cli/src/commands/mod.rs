//! One module per `graft` subcommand.

pub mod fetch;
pub mod tokenize;
pub mod export;
pub mod quickstart;
pub mod compare;
pub mod train;
pub mod bench;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod validate;
pub mod data;
pub mod eval_tasks;
pub mod selftest;
