//! `graft quickstart`: the two-minute tour — fine-tune the default model on tweet sentiment and
//! show the before/after table.

use anyhow::Result;
use graft::recipes::finetune::Event;
use graft::recipes::quickstart::{self, QuickstartOptions};
use std::path::PathBuf;

/// Fine-tune the default model (LoRA) on tweet sentiment as chat instructions and compare it
/// with the base model on held-out tweets.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft quickstart\n  graft quickstart --steps 10 --test 100 --out runs/qs-small --json"
)]
pub struct Args {
    /// Run directory (data, checkpoints, adapter, metrics, quickstart.json).
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 50)]
    pub steps: u64,
    /// Training tweets available to the run.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Held-out tweets scored before and after fine-tuning.
    #[arg(long, default_value_t = 500)]
    pub test: usize,
    /// Tweets per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed for the split, initialisation and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the whole report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let opts = QuickstartOptions {
        out: args.out,
        n_train: args.train,
        n_test: args.test,
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
    };
    let mut last = std::time::Instant::now();
    let mut on_event = |e: Event| match e {
        Event::Note(n) => eprintln!("{n}"),
        Event::Start { total_steps, .. } => eprintln!("fine-tuning LoRA for {total_steps} steps"),
        Event::Step(r) => {
            if last.elapsed().as_secs_f64() > 5.0 || r.step == 1 {
                eprintln!("  step {:>4}  loss {:.4}  {:.0} tok/s", r.step, r.loss, r.tokens_per_s);
                last = std::time::Instant::now();
            }
        }
    };
    let report = quickstart::run(&opts, &mut on_event)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let (b, f) = (&report.base, &report.finetuned);
    println!("\nTweet sentiment, {} held-out tweets (3 classes)\n", report.n_test);
    println!("| model                 | accuracy | macro-F1 | held-out loss |");
    println!("|-----------------------|----------|----------|---------------|");
    println!(
        "| base, zero-shot       | {:>8.3} | {:>8.3} | {:>13.4} |",
        b.classification.accuracy, b.classification.macro_f1, b.eval_loss
    );
    println!(
        "| LoRA fine-tuned       | {:>8.3} | {:>8.3} | {:>13.4} |",
        f.classification.accuracy, f.classification.macro_f1, f.eval_loss
    );
    println!("\nSample answers (gold / base / fine-tuned):");
    for s in &report.samples {
        let tweet: String = s.tweet.chars().take(70).collect();
        println!("  {:<72} {} / {} / {}", tweet, s.gold, s.base, s.finetuned);
    }
    println!(
        "\n{} steps in {:.0}s; adapter (PEFT format) in {}; report in quickstart.json",
        report.training.steps,
        report.training.wall_time_s,
        report.training.output.display()
    );
    Ok(())
}
