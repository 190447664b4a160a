//! One module per `graft` subcommand.

pub mod bench;
pub mod compare;
pub mod data;
pub mod embed;
pub mod eval;
pub mod eval_tasks;
pub mod export;
pub mod fetch;
pub mod generate;
pub mod quickstart;
pub mod selftest;
pub mod tokenize;
pub mod train;
pub mod validate;
