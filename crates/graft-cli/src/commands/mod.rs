//! One module per `graft` subcommand.

pub mod tokenize;
pub mod bench;
pub mod eval;
pub mod generate;
