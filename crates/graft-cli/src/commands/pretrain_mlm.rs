//! `graft pretrain-mlm`: masked-language modelling of a BERT-family encoder on a text corpus.

use super::train::progress_printer;
use anyhow::Result;
use graft::recipes::mlm::{self, MlmConfig};
use indicatif::ProgressBar;
use std::path::PathBuf;

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

/// What `graft pretrain-mlm` and `graft pretrain-simcse` share: the config, overrides, device,
/// resume and output form.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The run's config: `[model]`, `[data]`, `[train]`, `[output]` as for `graft train`, plus
    /// `[mlm]` (masked LM) or `[simcse]` (SimCSE).
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

impl RunArgs {
    /// The config with `--set` and `--device` applied.
    pub fn load(&self) -> Result<MlmConfig> {
        let mut overrides = self.overrides.clone();
        if let Some(device) = &self.device {
            overrides.push(format!("model.device={device}"));
        }
        Ok(MlmConfig::load(&self.config, &overrides)?)
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let args = args.run;
    let cfg = args.load()?;
    let bar = ProgressBar::hidden();
    let summary = mlm::run(&cfg, args.resume, &mut progress_printer(&bar))?;
    bar.finish_and_clear();
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
