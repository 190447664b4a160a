//! The continual-learning configuration file (`graft continual CONFIG.toml`): the `graft train`
//! sections (`[model]`, `[adapter]`, `[data]`, `[train]`, `[output]`, the same keys), one
//! `[[tasks]]` entry per task of the sequence (in order), a `[continual]` section (the methods
//! compared) and the `[multitask]` section of `graft multitask` (how the `multitask` method
//! mixes the tasks). Unknown keys are errors.

use super::multitask::{MultitaskConfig, MultitaskSection, TaskEntry};
use super::{
    read_toml, relative_to, AdapterKind, AdapterSection, DataSection, FromRunAdapter, ModelSection, OutputSection,
    TrainConfig, TrainSection,
};
use crate::continual::Direction;
use crate::data::{source, DataFormat};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole continual-learning comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ContinualConfig {
    /// The base model every method starts from (as `graft train`'s `[model]`; `from_run`,
    /// `keep_layers` and `expand_blocks` are refused: the methods set them).
    pub model: ModelSection,
    /// The LoRA of `sequential_lora`, `per_task_lora` and `multitask` (`kind` must be `lora`
    /// or `qlora`; `r`, `alpha`, `dropout`, `targets`).
    pub adapter: AdapterSection,
    /// Data settings every stage shares: `seq_len`, `packing`. `train`, `eval` and `replay`
    /// must be left out (each task has its own files).
    pub data: DataSection,
    /// Optimisation of every stage (as `graft train`'s `[train]`); `train.max_steps` is per
    /// stage, and the `multitask` run gets the tasks' count times it. `train.eval_batches`
    /// (when above 0) caps the scored examples of every task at `eval_batches × batch_size`.
    pub train: TrainSection,
    /// Where results go: `output.dir` holds `base/`, one folder per method and the report.
    pub output: OutputSection,
    /// The task sequence, one `[[tasks]]` entry each, in training order (at least one).
    pub tasks: Vec<ContinualTask>,
    /// What is compared.
    pub continual: ContinualSection,
    /// How the `multitask` method mixes and weights the tasks (as `graft multitask`'s).
    pub multitask: MultitaskSection,
}

/// One `[[tasks]]` entry: a task of the sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinualTask {
    /// The task's name (required, unique): it names the task in the matrix, the report and
    /// errors.
    pub name: String,
    /// Training JSONL file (required): a path (relative to the config file) or
    /// `dataset:NAME/FILE`.
    pub data: PathBuf,
    /// `text` | `prompt_completion` | `messages` | `alpaca`. Default `text`.
    #[serde(default = "text_format")]
    pub format: DataFormat,
    /// Evaluation JSONL file (required, same format): every score of the task is measured on it.
    pub eval: Option<PathBuf>,
    /// `loss` (held-out next-token loss, lower is better) or `accuracy` (label scoring of the
    /// answers as `graft eval classify` does; needs a `messages`, `alpaca` or
    /// `prompt_completion` file whose answers are labels). Default `loss`.
    #[serde(default)]
    pub score: TaskScore,
}

fn text_format() -> DataFormat {
    DataFormat::Text
}

/// `tasks.score`: how a task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskScore {
    /// Mean next-token loss per supervised token of the eval file.
    #[default]
    Loss,
    /// Label-scoring accuracy on the eval file.
    Accuracy,
}

impl TaskScore {
    /// The score's name as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            TaskScore::Loss => "loss",
            TaskScore::Accuracy => "accuracy",
        }
    }

    /// Which way the score improves.
    pub fn direction(self) -> Direction {
        match self {
            TaskScore::Loss => Direction::LowerIsBetter,
            TaskScore::Accuracy => Direction::HigherIsBetter,
        }
    }
}

/// A continual-learning method (`continual.methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Full fine-tuning, stage `j` starting from stage `j − 1`'s model.
    SequentialFull,
    /// One LoRA continued across the stages (each stage keeps the earlier stage's adapter).
    SequentialLora,
    /// Each task its own LoRA from the base model; task `i` is scored through its own
    /// adapter (and with the base model before its stage).
    PerTaskLora,
    /// The model grows once by `continual.expand_blocks` identity blocks in the first stage;
    /// every stage trains only those blocks, starting from the earlier stage's model.
    BlockExpansion,
    /// One `graft multitask` run on every task at once: one row, the reference.
    Multitask,
}

impl Method {
    /// The method's name as the config writes it (its folder under `output.dir`).
    pub fn name(self) -> &'static str {
        match self {
            Method::SequentialFull => "sequential_full",
            Method::SequentialLora => "sequential_lora",
            Method::PerTaskLora => "per_task_lora",
            Method::BlockExpansion => "block_expansion",
            Method::Multitask => "multitask",
        }
    }
}

/// `[continual]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinualSection {
    /// The methods compared, each once: `sequential_full` | `sequential_lora` |
    /// `per_task_lora` | `block_expansion` | `multitask`. Default: all five.
    pub methods: Vec<Method>,
    /// New blocks of `block_expansion` (1 to the model's block count). Default 2.
    pub expand_blocks: usize,
}

impl Default for ContinualSection {
    fn default() -> Self {
        Self {
            methods: vec![
                Method::SequentialFull,
                Method::SequentialLora,
                Method::PerTaskLora,
                Method::BlockExpansion,
                Method::Multitask,
            ],
            expand_blocks: 2,
        }
    }
}

/// Whether the TOML file at `path` is a continual-learning config (it has `[continual]`).
pub fn is_continual_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.contains_key("continual"))
}

impl ContinualConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`), then validates. Relative
    /// task paths are relative to the config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: ContinualConfig = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for task in &mut cfg.tasks {
            task.data = relative_to(base, &task.data);
            task.eval = task.eval.as_ref().map(|p| relative_to(base, p));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: tasks (at least one, unique names, an eval file each, files
    /// of their format), methods (at least one, each once), the sections the methods set.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        if self.tasks.is_empty() {
            return bad("tasks", "no task: give the sequence as [[tasks]] entries (name, data, eval)".into());
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.name.trim().is_empty() {
                return bad("tasks.name", format!("task {} has no name", i + 1));
            }
            if self.tasks[..i].iter().any(|t| t.name == task.name) {
                return bad("tasks.name", format!("task `{}` is listed twice", task.name));
            }
            let in_task = |key: &str, why: String| {
                Err(GraftError::Input(format!("task `{}`: config key `tasks.{key}`: {why}", task.name)))
            };
            let Some(eval) = &task.eval else {
                return in_task("eval", "is required: every score of the task is measured on it".into());
            };
            for (key, path) in [("data", &task.data), ("eval", eval)] {
                if !source::is_dataset_ref(path) && !path.is_file() {
                    return in_task(key, format!("{} does not exist", path.display()));
                }
                if let Err(e) = source::check_format(path, task.format) {
                    return in_task(key, e.to_string());
                }
            }
            if task.score == TaskScore::Accuracy && task.format == DataFormat::Text {
                return in_task(
                    "score",
                    "\"accuracy\" scores answers by label scoring; a `text` file has none (use format \
                     `messages`, `alpaca` or `prompt_completion`, or score = \"loss\")"
                        .into(),
                );
            }
        }
        let methods = &self.continual.methods;
        if methods.is_empty() {
            return bad("continual.methods", "is empty: name at least one method".into());
        }
        if let Some(m) = methods.iter().enumerate().find(|(i, m)| methods[..*i].contains(m)) {
            return bad("continual.methods", format!("`{}` is listed twice", m.1.name()));
        }
        if !self.data.train.as_os_str().is_empty() || self.data.eval.is_some() || self.data.replay.is_some() {
            return bad("data.train / data.eval / data.replay", "are per task here: give them in [[tasks]]".into());
        }
        if self.model.from_run.is_some() || self.model.keep_layers.is_some() || self.model.expand_blocks.is_some() {
            return bad(
                "model.from_run / keep_layers / expand_blocks",
                "are set by the methods (use continual.expand_blocks for block expansion)".into(),
            );
        }
        if !matches!(self.adapter.kind, AdapterKind::Lora | AdapterKind::Qlora) {
            return bad(
                "adapter.kind",
                format!("is the LoRA of the LoRA methods: \"lora\" or \"qlora\", not {:?}", self.adapter.kind),
            );
        }
        crate::models::llama::BlockExpansion::check(self.continual.expand_blocks)
            .map_err(|e| GraftError::Input(format!("config key `continual.expand_blocks`: {e}")))?;
        // Every stage's config checks as `graft train`'s would.
        for j in 0..self.tasks.len() {
            self.task_config(j, &self.output.dir).validate().map_err(|e| in_task(&self.tasks[j].name, e))?;
        }
        Ok(())
    }

    /// The `graft train` config of task `j` from the base model with the `[adapter]` LoRA,
    /// written to `out`; the methods change what they start from and what trains.
    pub fn task_config(&self, j: usize, out: &Path) -> TrainConfig {
        let task = &self.tasks[j];
        TrainConfig {
            model: ModelSection { from_run_adapter: FromRunAdapter::Merge, ..self.model.clone() },
            adapter: self.adapter.clone(),
            data: DataSection {
                train: task.data.clone(),
                eval: task.eval.clone(),
                format: task.format,
                replay: None,
                ..self.data.clone()
            },
            train: self.train.clone(),
            output: OutputSection { dir: out.to_path_buf() },
        }
    }

    /// The `graft multitask` config of the `multitask` method: every task at once, with
    /// `train.max_steps` times the tasks' count (the steps of the whole sequence).
    pub fn multitask_config(&self, out: &Path) -> MultitaskConfig {
        let mut train = self.train.clone();
        train.max_steps = train.max_steps.map(|s| s * self.tasks.len() as u64);
        MultitaskConfig {
            model: self.model.clone(),
            adapter: self.adapter.clone(),
            data: DataSection { train: PathBuf::new(), eval: None, replay: None, ..self.data.clone() },
            train,
            output: OutputSection { dir: out.to_path_buf() },
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskEntry {
                    name: t.name.clone(),
                    data: t.data.clone(),
                    format: t.format,
                    eval: t.eval.clone(),
                    weight: None,
                })
                .collect(),
            multitask: self.multitask.clone(),
        }
    }
}

/// `e` with the task named, when it is bad input.
pub(crate) fn in_task(name: &str, e: GraftError) -> GraftError {
    match e {
        GraftError::Input(_) | GraftError::Data(_) => GraftError::Input(format!("task `{name}`: {e}")),
        other => other,
    }
}
