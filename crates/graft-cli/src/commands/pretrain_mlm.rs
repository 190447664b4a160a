//! `graft pretrain-mlm`: masked-language modelling of a BERT-family encoder on a text corpus.

use super::run_args::RunArgs;
use super::train::with_progress;
use anyhow::Result;
use graft::recipes::mlm::{self, MlmConfig};

/// Adapt a BERT-family encoder to a text corpus by masked-language modelling.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft pretrain-mlm configs/mlm-tweets.toml\n  graft pretrain-mlm configs/mlm-tweets.toml --set train.max_steps=50 --set output.dir=runs/mlm50\n  graft pretrain-mlm configs/mlm-tweets.toml --resume\n  graft embed --model runs/mlm-tweets/encoder --input texts.jsonl --out emb\n\nThe adapted encoder is written to OUTPUT.DIR/encoder (a Hugging Face folder with the MLM head); keys in docs/encoders.md."
)]
pub struct Args {
    /// The run's config and how to run it.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The masked-LM (or SimCSE) config of `args`, with `--set` and `--device` applied.
pub fn load_config(args: &RunArgs) -> Result<MlmConfig> {
    Ok(MlmConfig::load(&args.config, &args.overrides())?)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let args = args.run;
    let cfg = load_config(&args)?;
    let summary = with_progress(|on_event| mlm::run(&cfg, args.resume, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let loss = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.4}"));
        let acc = |a: Option<f64>| a.map_or("-".into(), |a| format!("{:.1}%", 100.0 * a));
        println!(
            "held-out MLM loss {} -> {} (accuracy {} -> {}); {} steps, {} masked tokens in {:.0}s; encoder in {}",
            loss(summary.run.base_eval_loss),
            loss(summary.run.final_eval_loss),
            acc(summary.base_eval_accuracy),
            acc(summary.final_eval_accuracy),
            summary.run.steps,
            summary.run.units,
            summary.run.wall_time_s,
            summary.output.display()
        );
    }
    Ok(())
}
