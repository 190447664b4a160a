//! One module per `graft` subcommand.
