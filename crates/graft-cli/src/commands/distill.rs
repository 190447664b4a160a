//! `graft distill`: train a student on a frozen teacher's next-token distributions.

use super::run_args::RunArgs;
use super::train::{print_summary, with_progress};
use anyhow::Result;
use graft::config::distill::DistillConfig;

/// Distill a teacher into a student: the `graft train` config plus `[teacher]` and `[distill]`
/// (docs/distillation.md). Same run directory, checkpoints, `--resume` and summary as `graft train`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft distill configs/distill-chat.toml\n  graft distill configs/distill-chat.toml --set distill.loss=\"jsd\" --set distill.beta=0.5\n  graft distill configs/distill-chat.toml --set teacher.adapter=runs/lora-chat\n  graft distill configs/distill-chat.toml --set distill.teacher_cache=\"runs/teacher-cache\" --set distill.cache_top_k=64\n  graft distill configs/distill-chat.toml --set distill.on_policy=0.5 --set distill.on_policy_max_new_tokens=16   # on-policy (GKD)\n  graft distill configs/distill-chat.toml --resume\n  graft distill configs/distill-gemma-tweets.toml   # another tokenizer: distill.loss = \"uld\""
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
    let cfg = DistillConfig::load(&args.config, &overrides)?;
    let summary = with_progress(|on_event| graft::recipes::distill::run(&cfg, args.resume, on_event))?;
    print_summary(&summary, args.json)
}
