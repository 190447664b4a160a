//! Starting a run from a finished earlier one (`model.from_run`): what it left in its run
//! directory, checked before anything loads, so that an unfinished run is refused by name.

use crate::config::{AdapterKind, AdapterSection, FromRunAdapter, ModelSection};
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
    finished_run_at(dir, 0)
}

/// Longest chain of LoRA stages that keep their earlier run's adapter (a guard against a
/// run folder that names itself).
const MAX_CHAIN: usize = 64;

/// The refusal of a LoRA run trained on another run's merged model.
fn chain(dir: &Path) -> GraftError {
    GraftError::Input(format!(
        "model.from_run: {} trained a LoRA adapter on another run's merged model; start from a run whose \
         base is a named model (a chain of LoRA stages is supported only with model.from_run_adapter = \"keep\")",
        dir.display()
    ))
}

/// [`finished_run`] of the `depth`-th earlier stage of a chain.
fn finished_run_at(dir: &Path, depth: usize) -> Result<EarlierRun> {
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
            let adapter = dir.join("adapter");
            if !adapter.join("adapter_model.safetensors").is_file() {
                return Err(unfinished("adapter/adapter_model.safetensors"));
            }
            match &model.from_run {
                None => Ok(EarlierRun::Lora { model, adapter }),
                // A stage that kept its earlier run's adapter trained that adapter further on the
                // same base: the chain's base is the first stage's.
                Some(earlier) if model.from_run_adapter == FromRunAdapter::Keep && depth < MAX_CHAIN => {
                    match finished_run_at(earlier, depth + 1)? {
                        EarlierRun::Lora { model, .. } => Ok(EarlierRun::Lora { model, adapter }),
                        EarlierRun::Model(_) => Err(chain(dir)),
                    }
                }
                Some(_) => Err(chain(dir)),
            }
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
