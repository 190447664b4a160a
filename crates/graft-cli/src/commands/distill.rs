//! `graft distill`: train a student on a frozen teacher's next-token distributions.

use super::train::{print_summary, progress_printer};
use anyhow::Result;
use graft::config::distill::DistillConfig;
use indicatif::ProgressBar;
use std::path::PathBuf;

/// Distill a teacher into a student: the `graft train` config plus `[teacher]` and `[distill]`
/// (docs/distillation.md). Same run directory, checkpoints, `--resume` and summary as `graft train`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft distill configs/distill-chat.toml\n  graft distill configs/distill-chat.toml --set distill.loss=\"jsd\" --set distill.beta=0.5\n  graft distill configs/distill-chat.toml --set teacher.adapter=runs/lora-chat\n  graft distill configs/distill-chat.toml --resume"
)]
pub struct Args {
    /// The run's config (keys documented in docs/distillation.md and docs/configuration.md).
    pub config: PathBuf,
    /// Override one config key: section.key=value (TOML value syntax). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Device to train on: `cpu`, `cuda` or `cuda:N` (the same as `--set model.device=...`).
    #[arg(long)]
    pub device: Option<String>,
    /// Continue from the newest good checkpoint in output.dir.
    #[arg(long)]
    pub resume: bool,
    /// Print the run summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(device) = &args.device {
        overrides.push(format!("model.device={device}"));
    }
    let cfg = DistillConfig::load(&args.config, &overrides)?;
    let bar = ProgressBar::hidden();
    let summary = graft::recipes::distill::run(&cfg, args.resume, &mut progress_printer(&bar))?;
    bar.finish_and_clear();
    print_summary(&summary, args.json)
}
