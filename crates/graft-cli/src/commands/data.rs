//! `graft data build appstream`: summarization and question-answering data from Debian's
//! AppStream metadata.

use anyhow::Result;
use clap::{Args, Subcommand};
use graft::recipes::tasks::{build_appstream, BuildOptions};
use std::path::PathBuf;

/// Build task datasets.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build appstream --out data/appstream --max 2000 --json")]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Build a dataset from local files.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build appstream --out data/appstream --max 2000 --json")]
struct BuildArgs {
    #[command(subcommand)]
    source: BuildSource,
}

#[derive(Debug, Subcommand)]
enum BuildSource {
    /// Summarization pairs (description → summary) and SQuAD-style questions from the AppStream
    /// metadata that `apt-get update` downloads.
    Appstream(AppstreamArgs),
}

/// `graft data build appstream` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build appstream --out data/appstream --max 2000 --json\n\n\
Writes summarize.{train,test}.jsonl (messages format: train with `graft train`, score with\n\
`graft eval summarize`), qa.{train,test}.jsonl (SQuAD-style: score with `graft eval qa`) and\n\
qa.train.messages.jsonl (the training questions as chat turns). Components are split by a hash\n\
of their ID and --seed, so a component stays on its side whatever --max is.")]
struct AppstreamArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// An AppStream component file (YAML, gzip'd or not); default: every
    /// /var/lib/apt/lists/*_dep11_Components-ARCH.yml.gz.
    #[arg(long)]
    appstream: Option<PathBuf>,
    /// Most components to use (in file order, after skips).
    #[arg(long)]
    max: Option<usize>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of components in the test split.
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
    /// Skip components whose plain-text description is longer than this many characters.
    #[arg(long, default_value_t = 1200)]
    max_description_chars: usize,
    /// Print one JSON object (the counts) on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft data ...`.
pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Build(BuildArgs { source: BuildSource::Appstream(a) }) => appstream(a),
    }
}

fn appstream(args: AppstreamArgs) -> Result<()> {
    let sources = match &args.appstream {
        Some(file) => vec![file.clone()],
        None => graft::datasets::appstream::default_files()?,
    };
    let opts = BuildOptions {
        sources,
        out: args.out.clone(),
        max: args.max,
        seed: args.seed,
        test_fraction: args.test_fraction,
        max_description_chars: args.max_description_chars,
    };
    let report = build_appstream(&opts, &mut |note| eprintln!("{note}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} components ({} without a license), skipped {:?}",
            report.n_components, report.n_without_license, report.skipped
        );
        for (name, n) in &report.files {
            println!("  {:>7} lines  {}", n, report.out.join(name).display());
        }
    }
    Ok(())
}
