//! The `graft` command-line tool: thin clap commands over the `graft` library.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod commands;

/// graft: transfer learning with pretrained generative models.
#[derive(Parser)]
#[command(name = "graft", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show how a model's tokenizer splits a text (ids and tokens).
    Tokenize(commands::tokenize::Args),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::Tokenize(args) => commands::tokenize::run(args),
    }
}
