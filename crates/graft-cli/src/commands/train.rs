//! `graft train`: fine-tune a model as a TOML config describes.

use super::run_args::RunArgs;
use anyhow::Result;
use graft::config::TrainConfig;
use graft::recipes::finetune::{self, Event};
use indicatif::{ProgressBar, ProgressStyle};

/// Fine-tune a pretrained model (LoRA, QLoRA, full or freeze) from a TOML config.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft train configs/lora-chat.toml\n  graft train configs/lora-chat.toml --set train.lr=1e-4 --set output.dir=runs/lr1e-4\n  graft train configs/lora-chat.toml --resume\n  graft train configs/full-alpaca.toml --device cuda --set model.dtype=bf16\n  graft train configs/lora-chat.toml --set data.train=my-chats.jsonl\n  graft train configs/student-15-blocks.toml\n  graft train configs/tapt-1-tweets-text.toml && graft train configs/tapt-2-tweets-chat.toml   # domain text (with replay), then the task from that run (model.from_run)\n\nEvery config in configs/ runs as it is: its data (dataset:NAME/FILE) is built on first use."
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
    let cfg = TrainConfig::load(&args.config, &overrides)?;
    let summary = train_with_progress(&cfg, args.resume)?;
    print_summary(&summary, args.json)
}

/// Prints a run's summary: one JSON object with `json`, else one line.
pub fn print_summary(summary: &finetune::Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        println!(
            "eval loss {:.4} -> {:.4} (perplexity {:.2} -> {:.2}); {} steps, {} tokens in {:.0}s; output in {}",
            summary.base_eval_loss,
            summary.final_eval_loss,
            summary.base_eval_ppl,
            summary.final_eval_ppl,
            summary.steps,
            summary.tokens,
            summary.wall_time_s,
            summary.output.display()
        );
        if let Some(c) = &summary.teacher_cache {
            println!(
                "teacher cache {} {}: {} positions of {} examples (top {}), {:.1} MB{}",
                c.dir.display(),
                c.state.as_str(),
                c.positions,
                c.examples,
                c.top_k,
                c.bytes as f64 / 1e6,
                if c.fill_time_s > 0.0 { format!(", filled in {:.0}s", c.fill_time_s) } else { String::new() }
            );
        }
    }
    Ok(())
}

/// Runs a fine-tuning with a progress bar (loss, tokens/s, ETA) on stderr.
pub fn train_with_progress(cfg: &TrainConfig, resume: bool) -> Result<finetune::Summary> {
    with_progress(|on_event| finetune::run(cfg, resume, on_event))
}

/// Runs `job` (a recipe taking an event sink) with [`progress_printer`] on stderr, clearing the
/// bar when it ends: how every training command shows its progress.
pub fn with_progress<T>(job: impl FnOnce(&mut dyn FnMut(Event)) -> graft::Result<T>) -> Result<T> {
    with_progress_in("tok/s", job)
}

/// [`with_progress`] with the throughput in `unit` (what a training example is: `tok/s` for
/// text, `transitions/s` for a game agent).
pub fn with_progress_in<T>(
    unit: &'static str,
    job: impl FnOnce(&mut dyn FnMut(Event)) -> graft::Result<T>,
) -> Result<T> {
    let bar = ProgressBar::hidden();
    let out = job(&mut progress_printer(&bar, unit))?;
    bar.finish_and_clear();
    Ok(out)
}

/// Turns training events into notes and a step bar (loss, lr, throughput in `unit`, eval loss, ETA) on
/// stderr; each `Start` re-arms the bar, so one printer serves several runs in a row. When stderr
/// is not a terminal (a log file, CI) the bar is replaced by a line every tenth of the run.
pub fn progress_printer<'a>(bar: &'a ProgressBar, unit: &'static str) -> impl FnMut(Event) + 'a {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut total = 0u64;
    move |e: Event| match e {
        Event::Note(n) => {
            if bar.is_hidden() {
                eprintln!("{n}");
            } else {
                bar.println(n);
            }
        }
        Event::Start { total_steps, from_step } => {
            total = total_steps;
            if !terminal {
                eprintln!("training for {total_steps} steps (from step {from_step})");
                return;
            }
            bar.reset();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total_steps);
            bar.set_position(from_step);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        Event::Step(r) => {
            let eval = r.eval_loss.map(|l| format!("  eval {l:.4}")).unwrap_or_default();
            let line = format!("loss {:.4}  lr {:.2e}  {:.0} {unit}{eval}", r.loss, r.lr, r.tokens_per_s);
            if !terminal {
                if r.step == 1 || r.step == total || r.step % (total / 10).max(1) == 0 {
                    eprintln!("  step {}/{total}  {line}", r.step);
                }
                return;
            }
            bar.set_position(r.step);
            bar.set_message(line);
            if r.step >= total {
                bar.finish_and_clear();
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
        }
    }
}
