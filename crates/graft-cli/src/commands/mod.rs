//! One module per `graft` subcommand.

pub mod fetch;
pub mod tokenize;
