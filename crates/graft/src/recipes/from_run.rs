//! Starting a run from a finished earlier one (`model.from_run`): what it left in its run
//! directory, checked before anything loads, so that an unfinished run is refused by name.

use crate::config::{AdapterKind, AdapterSection, ModelSection};
use crate::{GraftError, Result};
use std::path::{Path, PathBuf};

/// What the second stage starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum EarlierRun {
    /// A fully fine-tuned (or freeze-tuned) model: the run's `model/` folder.
    Model(PathBuf),
    /// A LoRA / QLoRA run: its base model (the earlier config's `[model]`) and its `adapter/`.
    Lora {
        /// The earlier run's `[model]` section.
        model: ModelSection,
        /// The adapter folder (PEFT format).
        adapter: PathBuf,
    },
}

/// Reads the finished run in `dir`: its resolved config, its `summary.json` (written last, so
/// its absence means the run did not finish) and what it trained.
pub fn finished_run(dir: &Path) -> Result<EarlierRun> {
    let unfinished = |what: &str| {
        GraftError::Input(format!(
            "model.from_run: {} is not a finished run: {what} is missing (train it to the end, or continue it \
             with --resume)",
            dir.display()
        ))
    };
    let cfg_path = dir.join("config.resolved.toml");
    if !cfg_path.is_file() {
        return Err(unfinished("config.resolved.toml"));
    }
    if !dir.join("summary.json").is_file() {
        return Err(unfinished("summary.json"));
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| GraftError::io(&cfg_path, e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", cfg_path.display())))?;
    let section = |name: &str| value.get(name).cloned().unwrap_or_else(|| toml::Value::Table(Default::default()));
    let bad = |e: toml::de::Error| GraftError::Input(format!("{}: {e}", cfg_path.display()));
    let model: ModelSection = section("model").try_into().map_err(bad)?;
    let adapter: AdapterSection = section("adapter").try_into().map_err(bad)?;
    match adapter.kind {
        AdapterKind::Lora | AdapterKind::Qlora => {
            if model.from_run.is_some() {
                return Err(GraftError::Input(format!(
                    "model.from_run: {} trained a LoRA adapter on another run's model; start from a run whose \
                     base is a named model (a chain of LoRA stages is not supported)",
                    dir.display()
                )));
            }
            let adapter = dir.join("adapter");
            if !adapter.join("adapter_model.safetensors").is_file() {
                return Err(unfinished("adapter/adapter_model.safetensors"));
            }
            Ok(EarlierRun::Lora { model, adapter })
        }
        AdapterKind::None | AdapterKind::Freeze | AdapterKind::Expanded => {
            let folder = dir.join("model");
            if !folder.join("config.json").is_file() {
                return Err(unfinished("model/config.json"));
            }
            Ok(EarlierRun::Model(folder))
        }
        AdapterKind::PromptTuning | AdapterKind::PrefixTuning => Err(GraftError::Input(format!(
            "model.from_run: {} trained a soft prompt ({:?}); a later stage starts from a LoRA or fully \
             fine-tuned run",
            dir.display(),
            adapter.kind
        ))),
    }
}
