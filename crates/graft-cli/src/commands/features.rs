//! `graft features`: classification heads on a frozen backbone's features. `progressive`
//! learns a sequence of tasks as a progressive network (one column per task, lateral adapters
//! from the frozen earlier columns) and reports the accuracy matrix.

use super::train::with_progress;
use anyhow::Result;
use clap::{Args, Subcommand};
use graft::recipes::progressive::{accuracy_table, ProgressiveRunConfig};
use std::path::PathBuf;

/// Heads on a frozen backbone's features.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  graft features progressive progressive.toml")]
pub struct FeaturesArgs {
    #[command(subcommand)]
    command: FeaturesCommand,
}

#[derive(Debug, Subcommand)]
enum FeaturesCommand {
    /// Learn tasks in sequence as a progressive network: MLP heads on sentence embeddings or
    /// image features, or copies of the backbone's top blocks / units.
    Progressive(ProgressiveArgs),
}

/// Learn the config's `[[tasks]]` in order, one column each (docs/multitask.md, "Progressive
/// networks"): after each task, every task's held-out accuracy is measured. Writes
/// progressive.safetensors, summary.json (the accuracy matrix) and one run folder per column
/// to output.dir, and prints the matrix.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  graft features progressive progressive.toml\n  \
graft features progressive progressive.toml --set head.hidden=[128] --set head.epochs=50 --json\n\n\
with progressive.toml:\n  \
[head]\n  hidden = [64]\n  epochs = 30\n\n  \
[[tasks]]\n  name = \"sentiment\"\n  train = \"sentiment.train.jsonl\"   # {\"text\": ..., \"label\": ...} per line\n  \
eval = \"sentiment.eval.jsonl\"\n\n  \
[[tasks]]\n  name = \"topic\"\n  train = \"topic.train.jsonl\"\n  eval = \"topic.eval.jsonl\"\n\n  \
[output]\n  dir = \"runs/progressive\"\n\n\
Image tasks (EfficientNet-Lite0 features) replace train/eval with an image dataset:\n  \
[backbone]\n  encoder = \"efficientnet-lite0\"\n\n  \
[[tasks]]\n  name = \"fashion\"\n  images = \"fashion-mnist\"   # or mnist-5k, digits-8x8\n  \
train_per_class = 100\n  eval_per_class = 50\n  image_size = 64\n\n\
Columns that copy the backbone's own top layers instead of MLP heads:\n  \
[encoder_columns]   # text tasks: the sentence encoder's top blocks\n  top_layers = 2\n\n  \
[cnn_columns]       # image tasks: EfficientNet-Lite0's top units (head convolution, stages)\n  top_units = 2")]
pub struct ProgressiveArgs {
    /// The run's config, a TOML file: [backbone], [head] (or [encoder_columns] / [cnn_columns]),
    /// [[tasks]], [output].
    config: PathBuf,
    /// Override one config key: section.key=value (TOML value syntax). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Device of the encoder and the columns: `cpu`, `cuda` or `cuda:N` (the same as
    /// `--set backbone.device=...`).
    #[arg(long)]
    device: Option<String>,
    /// Print the run summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft features`.
pub fn run(args: FeaturesArgs) -> Result<()> {
    match args.command {
        FeaturesCommand::Progressive(a) => progressive(a),
    }
}

fn progressive(args: ProgressiveArgs) -> Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(device) = &args.device {
        overrides.push(format!("backbone.device={device}"));
    }
    let cfg = ProgressiveRunConfig::load(&args.config, &overrides)?;
    let summary = with_progress(|on_event| graft::recipes::progressive::run(&cfg, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", accuracy_table(&summary));
        println!(
            "{} columns, {} trainable parameters; network in {}",
            summary.tasks.len(),
            summary.trainable_params,
            summary.network.display()
        );
    }
    Ok(())
}
