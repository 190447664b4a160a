//! The multitask configuration file (`graft multitask CONFIG.toml`): the `graft train` sections
//! (`[model]`, `[adapter]`, `[data]`, `[train]`, `[output]`, the same keys) plus one `[[tasks]]`
//! entry per task (its own data file and format) and a `[multitask]` section (how tasks are
//! mixed and weighted). `[data]` keeps the settings every task shares (`seq_len`, `packing`,
//! `eval_fraction`); its `train`, `eval` and `replay` are not used. Unknown keys are errors.

use super::{
    read_toml, relative_to, AdapterSection, DataSection, ModelSection, OutputSection, TrainConfig, TrainSection,
};
use crate::data::DataFormat;
use crate::multitask::{Mixing, Weighting};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole multitask run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MultitaskConfig {
    /// The model (as `graft train`'s `[model]`).
    pub model: ModelSection,
    /// How it is adapted (as `graft train`'s `[adapter]`); with `multitask.adapters = "shared"`
    /// one adapter serves every task.
    pub adapter: AdapterSection,
    /// Data settings every task shares: `seq_len`, `packing`, `eval_fraction` (for a task
    /// without an `eval` file). `train`, `eval` and `replay` must be left out.
    pub data: DataSection,
    /// Optimisation (as `graft train`'s `[train]`).
    pub train: TrainSection,
    /// Where results go.
    pub output: OutputSection,
    /// The tasks, one `[[tasks]]` entry each (at least one).
    pub tasks: Vec<TaskEntry>,
    /// How the tasks are mixed and weighted.
    pub multitask: MultitaskSection,
}

/// One `[[tasks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// The task's name (required, unique): it names the task in metrics, the summary and errors.
    pub name: String,
    /// Training JSONL file (required): a path (relative to the config file) or
    /// `dataset:NAME/FILE`.
    pub data: PathBuf,
    /// `text` | `prompt_completion` | `messages` | `alpaca`. Default `text`.
    #[serde(default = "text_format")]
    pub format: DataFormat,
    /// Evaluation JSONL file of the task (same format); when absent, `data.eval_fraction` of
    /// its training file is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PathBuf>,
    /// Loss weight of the task (a number above 0) under `multitask.weighting = "fixed"`;
    /// default 1. Refused with any other weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

fn text_format() -> DataFormat {
    DataFormat::Text
}

/// `multitask.mixing`: which task a step trains on (docs/multitask.md gives the shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MixingName {
    /// Shares proportional to the tasks' training examples.
    #[default]
    Proportional,
    /// Proportional to the example counts capped at `multitask.cap`.
    Capped,
    /// Proportional to `n_i^(1/t)` with `multitask.t`.
    Temperature,
    /// Every task the same share, drawn at random.
    Equal,
    /// Every task in turn.
    RoundRobin,
}

/// `multitask.weighting`: how task losses make the training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightingName {
    /// Weight 1 for every task.
    #[default]
    Equal,
    /// The tasks' `weight`s.
    Fixed,
    /// Learned log-variances (Kendall et al. 2018), a parameter group of their own.
    Uncertainty,
    /// Every step trains every task; their gradients are combined with PCGrad.
    Pcgrad,
}

/// `multitask.adapters`: which adapter serves which task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdapterSharing {
    /// One adapter (the `[adapter]` section's) trained by every task.
    #[default]
    Shared,
    /// One LoRA adapter per task (`[adapter]`'s spec each), the batch's task routing to its
    /// own; saved as `adapters/NAME`.
    PerTask,
    /// The `[adapter]` section's adapter shared by every task plus a small LoRA per task
    /// (rank `multitask.task_r`), the batch's task routing to its own; each task's saved adapter
    /// is the sum of both.
    SharedPlusTask,
}

/// `[multitask]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MultitaskSection {
    /// `proportional` | `capped` | `temperature` | `equal` | `round_robin`. Default
    /// `proportional`.
    pub mixing: MixingName,
    /// `mixing = "capped"` only (required there): the example cap `K` (≥ 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<usize>,
    /// `mixing = "temperature"` only (required there): the temperature `T` (> 0; mT5 uses
    /// `1/T = 0.3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// `equal` | `fixed` | `uncertainty` | `pcgrad`. Default `equal`.
    pub weighting: WeightingName,
    /// `shared` (one adapter for every task), `per_task` (one LoRA per task) or
    /// `shared_plus_task` (the shared one plus a small LoRA per task); the last two need
    /// `adapter.kind = "lora"` or `"qlora"`. Default `shared`.
    pub adapters: AdapterSharing,
    /// `adapters = "shared_plus_task"` only: the rank of each task's own LoRA (≥ 1; its α keeps
    /// the `[adapter]` section's `α / r`, its targets and dropout are the section's). Default 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_r: Option<usize>,
}

/// `multitask.task_r` when the config does not give it.
pub const DEFAULT_TASK_R: usize = 4;

impl MultitaskConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`), then validates. Relative task
    /// data paths are relative to the config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: MultitaskConfig = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for task in &mut cfg.tasks {
            task.data = relative_to(base, &task.data);
            task.eval = task.eval.as_ref().map(|p| relative_to(base, p));
        }
        cfg.model.from_run = cfg.model.from_run.as_ref().map(|p| relative_to(base, p));
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `graft train` config of task `i`: the shared sections with the task's data.
    pub fn task_config(&self, i: usize) -> Result<TrainConfig> {
        let task = self.tasks.get(i).ok_or_else(|| GraftError::Input(format!("no task {i}")))?;
        let data =
            DataSection { train: task.data.clone(), eval: task.eval.clone(), format: task.format, ..self.data.clone() };
        Ok(TrainConfig {
            model: self.model.clone(),
            adapter: self.adapter.clone(),
            data,
            train: self.train.clone(),
            output: self.output.clone(),
        })
    }

    /// The task names, in the config's order.
    pub fn task_names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }

    /// The mixing strategy (checked by [`MultitaskConfig::validate`]).
    pub fn mixing(&self) -> Mixing {
        let m = &self.multitask;
        match m.mixing {
            MixingName::Proportional => Mixing::Proportional,
            MixingName::Capped => Mixing::Capped { cap: m.cap.unwrap_or(1) },
            MixingName::Temperature => Mixing::Temperature { t: m.t.unwrap_or(1.0) },
            MixingName::Equal => Mixing::Equal,
            MixingName::RoundRobin => Mixing::RoundRobin,
        }
    }

    /// The loss weighting; PCGrad weighs every task 1 (its combination is of gradients).
    pub fn weighting(&self) -> Weighting {
        match self.multitask.weighting {
            WeightingName::Equal | WeightingName::Pcgrad => Weighting::Equal,
            WeightingName::Fixed => Weighting::Fixed(self.tasks.iter().map(|t| t.weight.unwrap_or(1.0)).collect()),
            WeightingName::Uncertainty => Weighting::Uncertainty,
        }
    }

    /// Checks every task as `graft train` checks its config (naming the task), the task list
    /// (at least one, unique non-empty names, weights above 0 and only with fixed weighting)
    /// and the `[multitask]` keys.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        if self.tasks.is_empty() {
            return bad("tasks", "a multitask config needs at least one [[tasks]] entry (name, data, format)".into());
        }
        let d = &self.data;
        if !d.train.as_os_str().is_empty() || d.eval.is_some() || d.replay.is_some() {
            return bad(
                "data.train / data.eval / data.replay",
                "are not used by a multitask config: each [[tasks]] entry names its own data and eval".into(),
            );
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.name.trim().is_empty() {
                return bad("tasks.name", format!("task {} has no name; every task needs a unique name", i + 1));
            }
            if self.tasks[..i].iter().any(|t| t.name == task.name) {
                return bad("tasks.name", format!("task `{}` is listed twice; task names must be unique", task.name));
            }
            if let Some(w) = task.weight {
                if !(w.is_finite() && w > 0.0) {
                    return bad(
                        "tasks.weight",
                        format!(
                            "task `{}` has loss weight {w}; weights must be finite numbers above 0 (leave the task \
                             out instead of weighting it 0)",
                            task.name
                        ),
                    );
                }
                if self.multitask.weighting != WeightingName::Fixed {
                    return bad(
                        "tasks.weight",
                        format!(
                            "task `{}` has a weight, which only applies to multitask.weighting = \"fixed\"",
                            task.name
                        ),
                    );
                }
            }
            let task_cfg = self.task_config(i)?;
            task_cfg.validate().map_err(|e| GraftError::Input(format!("task `{}`: {e}", task.name)))?;
        }
        self.validate_section()
    }

    /// The `[multitask]` keys: settings present for their strategy only, in range.
    fn validate_section(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let m = &self.multitask;
        match (m.mixing, m.cap, m.t) {
            (MixingName::Capped, None, _) => {
                return bad("multitask.cap", "is required with mixing = \"capped\"".into())
            }
            (MixingName::Capped, Some(0), _) => return bad("multitask.cap", "must be at least 1".into()),
            (MixingName::Temperature, _, None) => {
                return bad("multitask.t", "is required with mixing = \"temperature\"".into());
            }
            (MixingName::Temperature, _, Some(t)) if !(t.is_finite() && t > 0.0) => {
                return bad("multitask.t", format!("must be a number above 0, got {t}"));
            }
            (mixing, Some(_), _) if mixing != MixingName::Capped => {
                return bad("multitask.cap", "only applies to mixing = \"capped\"".into());
            }
            (mixing, _, Some(_)) if mixing != MixingName::Temperature => {
                return bad("multitask.t", "only applies to mixing = \"temperature\"".into());
            }
            _ => {}
        }
        let keeps_earlier = self.model.from_run.is_some() && self.model.from_run_adapter == super::FromRunAdapter::Keep;
        if m.adapters == AdapterSharing::PerTask && keeps_earlier {
            return bad(
                "multitask.adapters",
                "\"per_task\" starts every task's adapter fresh; it cannot also keep model.from_run's adapter \
                 (use model.from_run_adapter = \"merge\")"
                    .into(),
            );
        }
        let lora = matches!(self.adapter.kind, super::AdapterKind::Lora | super::AdapterKind::Qlora);
        match (m.adapters, m.task_r) {
            (AdapterSharing::SharedPlusTask, Some(0)) => return bad("multitask.task_r", "must be at least 1".into()),
            (AdapterSharing::SharedPlusTask, _) | (_, None) => {}
            (_, Some(_)) => return bad("multitask.task_r", "only applies to adapters = \"shared_plus_task\"".into()),
        }
        if m.adapters != AdapterSharing::Shared && !lora {
            return bad(
                "multitask.adapters",
                format!(
                    "{} trains a LoRA per task, but adapter.kind is {}: set adapter.kind = \"lora\" or \"qlora\"",
                    serde_json::to_string(&m.adapters).unwrap_or_default(),
                    serde_json::to_string(&self.adapter.kind).unwrap_or_default()
                ),
            );
        }
        Ok(())
    }
}

/// Whether the TOML file at `path` is a multitask config (it has `[[tasks]]` or `[multitask]`).
pub fn is_multitask_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.contains_key("tasks") || value.contains_key("multitask"))
}
