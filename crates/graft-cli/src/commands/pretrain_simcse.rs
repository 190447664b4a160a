//! `graft pretrain-simcse`: unsupervised SimCSE of a BERT-family encoder on a text corpus.

use super::pretrain_mlm::load_config;
use super::run_args::RunArgs;
use super::train::with_progress;
use anyhow::Result;
use graft::recipes::mlm::simcse;

/// Adapt a BERT-family encoder to a text corpus by unsupervised SimCSE (contrastive, dropout views).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft pretrain-simcse configs/simcse-tweets.toml\n  graft pretrain-simcse configs/simcse-tweets.toml --set train.max_steps=50 --set simcse.temperature=0.1\n  graft pretrain-simcse configs/simcse-tweets.toml --resume\n  graft embed --model runs/simcse-tweets/encoder --input texts.jsonl --out emb\n\nThe config is a masked-LM config with a [simcse] section; the adapted encoder is written to OUTPUT.DIR/encoder (a Hugging Face folder); keys in docs/encoders.md."
)]
pub struct Args {
    /// The run's config and how to run it.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let args = args.run;
    let cfg = load_config(&args)?;
    let summary = with_progress(|on_event| simcse::run(&cfg, args.resume, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let loss = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.4}"));
        let geo = |g: Option<simcse::Geometry>| {
            g.map_or("-".into(), |g| format!("{:.3}/{:.3}/{:.3}", g.alignment, g.uniformity, g.mean_cosine))
        };
        println!(
            "held-out SimCSE loss {} -> {} (alignment/uniformity/mean cosine {} -> {}); {} steps, {} texts in {:.0}s; encoder in {}",
            loss(summary.run.base_eval_loss),
            loss(summary.run.final_eval_loss),
            geo(summary.base_eval_geometry),
            geo(summary.final_eval_geometry),
            summary.run.steps,
            summary.run.units,
            summary.run.wall_time_s,
            summary.output.display()
        );
    }
    Ok(())
}
