//! `graft multitask`: train one model on several tasks (task mixing, loss weighting, PCGrad).

use super::run_args::RunArgs;
use super::train::{print_summary, with_progress};
use anyhow::Result;
use graft::config::multitask::MultitaskConfig;

/// Train one model (one shared adapter) on several tasks: the `graft train` config plus
/// `[[tasks]]` entries and a `[multitask]` section (docs/multitask.md). Same run directory,
/// checkpoints, `--resume` and summary as `graft train`; the summary adds each task's results.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft multitask configs/multitask-tweets-appstream.toml\n  graft multitask configs/multitask-tweets-appstream.toml --set multitask.weighting=\"pcgrad\"\n  graft multitask configs/multitask-tweets-appstream.toml --set multitask.mixing=\"temperature\" --set multitask.t=2.0\n  graft multitask configs/multitask-tweets-appstream.toml --resume"
)]
pub struct Args {
    /// The run's config and how to run it.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let args = args.run;
    let overrides = args.overrides();
    let cfg = MultitaskConfig::load(&args.config, &overrides)?;
    let summary = with_progress(|on_event| graft::recipes::multitask::run(&cfg, args.resume, on_event))?;
    print_summary(&summary, args.json)
}
