//! One module per `graft` subcommand.

pub mod tokenize;
