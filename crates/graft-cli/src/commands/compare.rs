//! `graft compare`: run one task with several transfer techniques and write the comparison
//! (Markdown + JSON table, HTML report with plots).

use super::train::with_progress;
use anyhow::Result;
use graft::recipes::compare::{self, CompareConfig};
use std::path::PathBuf;

/// Compare transfer techniques on one task: zero-shot and few-shot prompting, probes on frozen
/// features, soft prompt, prefix, LoRA, full fine-tuning and training from scratch.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft compare configs/compare-sentiment.toml\n  graft compare configs/compare-sentiment.toml --set 'techniques=[\"zero_shot\",\"lora\"]' --set train.steps=20\n  graft compare configs/compare-sentiment.toml --set 'learning_curve.fractions=[0.01,0.1,1.0]'\n\nWrites compare.md, compare.json and report.html (open it in a browser) into output.dir.\nConfig keys: docs/compare.md."
)]
pub struct Args {
    /// The comparison's config (TOML; an empty file runs every technique with the defaults).
    pub config: PathBuf,
    /// Override one config key: section.key=value (TOML value syntax). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run every technique again, even those whose folder holds a result of the same settings
    /// (by default such results are reused, so an interrupted comparison continues).
    #[arg(long)]
    pub rerun: bool,
    /// Print the whole report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let cfg = CompareConfig::load(&args.config, &args.overrides)?;
    let (report, files) = with_progress(|on_event| compare::run(&cfg, args.rerun, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("\n{}", graft::report::markdown_table(&report));
    println!(
        "Table: {}\nJSON: {}\nHTML report: {}",
        files.markdown.display(),
        files.json.display(),
        files.html.display()
    );
    Ok(())
}
