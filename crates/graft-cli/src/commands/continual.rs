//! `graft continual`: a sequence of tasks learned one after another by several methods, with
//! the score matrix, forgetting and transfer of each.

use super::run_args::RunArgs;
use super::train::with_progress;
use anyhow::Result;
use graft::config::continual::ContinualConfig;

/// Train a sequence of tasks with each method of `continual.methods` (sequential full
/// fine-tuning, sequential LoRA, per-task LoRA, block expansion, multitask), score every task
/// after every stage, and write the score matrices with average forgetting, backward and
/// forward transfer to `output.dir/summary.json` and `output.dir/report.md`
/// (docs/multitask.md). A rerun keeps finished stages and scores; `--resume` is implied.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft continual configs/continual-tweets-appstream.toml\n  graft continual configs/continual-tweets-appstream.toml --set continual.methods='[\"sequential_lora\", \"per_task_lora\"]'\n  graft continual configs/continual-tweets-appstream.toml --set train.max_steps=20 --set output.dir=\"runs/continual-short\""
)]
pub struct Args {
    /// The run's config and how to run it.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let args = args.run;
    let cfg = ContinualConfig::load(&args.config, &args.overrides())?;
    let summary = with_progress(|on_event| graft::recipes::continual::run(&cfg, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", std::fs::read_to_string(&summary.report)?);
        println!("{} stages trained; report in {}", summary.trained_stages, summary.report.display());
    }
    Ok(())
}
