//! The arguments every config-driven training command takes (`graft train`, `graft distill`,
//! `graft multitask`, `graft pretrain-mlm`, `graft pretrain-simcse`, `graft vision train`), so they read the
//! same everywhere.

use std::path::PathBuf;

/// A run's config and how to run it.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The run's config, a TOML file (keys in docs/configuration.md and the command's own doc).
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
    /// The `--set` overrides, with `--device` applied as `model.device`.
    pub fn overrides(&self) -> Vec<String> {
        let mut overrides = self.overrides.clone();
        if let Some(device) = &self.device {
            overrides.push(format!("model.device={device}"));
        }
        overrides
    }
}
