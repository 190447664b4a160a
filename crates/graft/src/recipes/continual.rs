//! Continual-learning recipe (`graft continual`): a sequence of tasks trained by each method of
//! `continual.methods`, every task scored after every stage, and the score matrix with its
//! forgetting, backward and forward transfer per method (`continual::metrics`).
//!
//! Every stage is a `graft train` run (`finetune::run`) in `output.dir/METHOD/stage-J`, a later
//! one starting from the earlier one with `model.from_run`; the `multitask` method is one
//! `graft multitask` run in `output.dir/multitask`. A stage whose `summary.json` exists is not
//! trained again, and scores already in a folder's `scores.json` are not measured again, so a
//! rerun continues where an interrupted one stopped (an interrupted stage resumes from its
//! newest checkpoint).

use super::continual_score::{eval_files, scores, TaskEval, SCORES_FILE};
use crate::config::continual::{ContinualConfig, Method, TaskScore};
use crate::config::{AdapterKind, AdapterSection, FromRunAdapter, TrainConfig};
use crate::continual::{ContinualMetrics, ScoreMatrix};
use crate::train::Event;
use crate::{GraftError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One task of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// How it is scored.
    pub score: TaskScore,
    /// The base model's score (`b_i`).
    pub base: f64,
}

/// One method's results.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    /// The method.
    pub method: Method,
    /// The run folder of each row (for `per_task_lora`, the row's own stage; its earlier
    /// tasks are scored through their own stages' adapters).
    pub stages: Vec<PathBuf>,
    /// The score matrix: `r[j][i]` is task `i`'s score after stage `j` (T × T; one row for
    /// `multitask`).
    pub r: Vec<Vec<f64>>,
    /// Mean of the last row.
    pub average_final: f64,
    /// Forgetting, BWT and FWT (the sequential methods; `None` for `multitask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ContinualMetrics>,
}

/// `summary.json` of a continual-learning run (`output.dir/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ContinualSummary {
    /// The tasks, in training order.
    pub tasks: Vec<TaskReport>,
    /// Each method's results, in the config's order.
    pub methods: Vec<MethodReport>,
    /// Stages (runs) this invocation trained; 0 when every stage was already finished.
    pub trained_stages: usize,
    /// The Markdown report's path.
    pub report: PathBuf,
}

/// Runs every method of `cfg` (training what is not finished yet), scores every task after
/// every stage, and writes `summary.json` and `report.md` into `output.dir`.
pub fn run(cfg: &ContinualConfig, on_event: &mut dyn FnMut(Event)) -> Result<ContinualSummary> {
    cfg.validate()?;
    let out = std::path::absolute(&cfg.output.dir).map_err(|e| GraftError::io(&cfg.output.dir, e))?;
    let evals = eval_files(cfg, &mut |n| on_event(Event::Note(n)))?;
    let all: Vec<&TaskEval> = evals.iter().collect();
    on_event(Event::Note("scoring the base model on every task".into()));
    let base = row(&scores(cfg, None, &all, &out.join("base"), &mut |n| on_event(Event::Note(n)))?, &evals)?;
    let mut trained = 0;
    let mut methods = Vec::with_capacity(cfg.continual.methods.len());
    for &method in &cfg.continual.methods {
        let dir = out.join(method.name());
        let report = match method {
            Method::Multitask => multitask(cfg, &dir, &evals, &mut trained, on_event)?,
            _ => sequence(cfg, method, &dir, &evals, &base, &mut trained, on_event)?,
        };
        methods.push(report);
    }
    let tasks = cfg
        .tasks
        .iter()
        .zip(&base)
        .map(|(t, &b)| TaskReport { name: t.name.clone(), score: t.score, base: b })
        .collect();
    let report = out.join("report.md");
    let summary = ContinualSummary { tasks, methods, trained_stages: trained, report: report.clone() };
    std::fs::write(&report, super::continual_report::markdown(&summary)).map_err(|e| GraftError::io(&report, e))?;
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?).map_err(|e| GraftError::io(&path, e))?;
    Ok(summary)
}

/// The scores of `evals`' tasks in order, from a folder's `{task: score}`.
fn row(scores: &BTreeMap<String, f64>, evals: &[TaskEval]) -> Result<Vec<f64>> {
    evals
        .iter()
        .map(|t| {
            scores.get(&t.name).copied().ok_or_else(|| GraftError::Input(format!("task `{}` was not scored", t.name)))
        })
        .collect()
}

/// Trains the stage `tc` describes unless its run folder holds a `summary.json` (a finished
/// run); an interrupted one resumes from its newest checkpoint. Returns whether it trained.
fn train_stage(tc: &TrainConfig, on_event: &mut dyn FnMut(Event)) -> Result<bool> {
    let dir = &tc.output.dir;
    if dir.join("summary.json").is_file() {
        on_event(Event::Note(format!("{} is finished: kept", dir.display())));
        return Ok(false);
    }
    // Scores of an earlier, unfinished attempt would not be this run's.
    let _ = std::fs::remove_file(dir.join(SCORES_FILE));
    let resume = dir.join("LATEST").is_file();
    super::finetune::run(tc, resume, on_event)?;
    Ok(true)
}

/// The config of stage `j` of a sequential `method`, after the stage in `earlier` (whose grown
/// blocks, for block expansion, are `new_layers`).
fn stage_config(
    cfg: &ContinualConfig,
    method: Method,
    j: usize,
    dir: &Path,
    earlier: Option<&Path>,
    new_layers: &[usize],
) -> TrainConfig {
    let mut tc = cfg.task_config(j, dir);
    let from = earlier.map(Path::to_path_buf);
    let only = |kind| AdapterSection { kind, ..AdapterSection::default() };
    match method {
        Method::SequentialFull => {
            tc.adapter = only(AdapterKind::None);
            tc.model.from_run = from;
        }
        Method::SequentialLora if from.is_some() => {
            tc.model.from_run = from;
            tc.model.from_run_adapter = FromRunAdapter::Keep;
        }
        Method::BlockExpansion if from.is_none() => {
            tc.adapter = only(AdapterKind::Expanded);
            tc.model.expand_blocks = Some(cfg.continual.expand_blocks);
        }
        Method::BlockExpansion => {
            // The grown model as a whole is the earlier stage's; only its new blocks train.
            tc.adapter = AdapterSection {
                targets: new_layers.iter().map(|k| format!("layers.{k}.*")).collect(),
                ..only(AdapterKind::Freeze)
            };
            tc.model.from_run = from;
        }
        Method::SequentialLora | Method::PerTaskLora | Method::Multitask => {}
    }
    tc
}

/// The new blocks' indices recorded in a block-expansion run's `summary.json`.
fn expanded_layers(dir: &Path) -> Result<Vec<usize>> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    serde_json::from_value(value["expansion"]["new_layers"].clone())
        .map_err(|e| GraftError::Input(format!("{}: no expansion.new_layers ({e})", path.display())))
}

/// One sequential method: its stages trained in order, then the score matrix.
fn sequence(
    cfg: &ContinualConfig,
    method: Method,
    dir: &Path,
    evals: &[TaskEval],
    base: &[f64],
    trained: &mut usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<MethodReport> {
    let t = cfg.tasks.len();
    let stages: Vec<PathBuf> = (1..=t).map(|j| dir.join(format!("stage-{j}"))).collect();
    let mut new_layers = Vec::new();
    for j in 0..t {
        // Per-task LoRA starts every stage from the base model.
        let earlier = (j > 0 && method != Method::PerTaskLora).then(|| stages[j - 1].as_path());
        let tc = stage_config(cfg, method, j, &stages[j], earlier, &new_layers);
        on_event(Event::Note(format!("{} stage {}/{t}: task `{}`", method.name(), j + 1, cfg.tasks[j].name)));
        *trained += usize::from(train_stage(&tc, on_event)?);
        if method == Method::BlockExpansion && j == 0 {
            new_layers = expanded_layers(&stages[0])?;
        }
    }
    let mut note = |n| on_event(Event::Note(n));
    let r: Vec<Vec<f64>> = if method == Method::PerTaskLora {
        // Task i is scored through its own adapter once trained, and with the base model before.
        let own: Vec<f64> = evals
            .iter()
            .zip(&stages)
            .map(|(task, stage)| Ok(scores(cfg, Some(stage), &[task], stage, &mut note)?[&task.name]))
            .collect::<Result<_>>()?;
        (0..t).map(|j| (0..t).map(|i| if i <= j { own[i] } else { base[i] }).collect()).collect()
    } else {
        let all: Vec<&TaskEval> = evals.iter().collect();
        stages
            .iter()
            .map(|stage| row(&scores(cfg, Some(stage), &all, stage, &mut note)?, evals))
            .collect::<Result<_>>()?
    };
    let directions = cfg.tasks.iter().map(|t| t.score.direction()).collect();
    let metrics = ScoreMatrix { r: r.clone(), base: Some(base.to_vec()), directions }.metrics()?;
    Ok(MethodReport { method, stages, r, average_final: metrics.average_final, metrics: Some(metrics) })
}

/// The `multitask` method: one `graft multitask` run on every task, scored once.
fn multitask(
    cfg: &ContinualConfig,
    dir: &Path,
    evals: &[TaskEval],
    trained: &mut usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<MethodReport> {
    if dir.join("summary.json").is_file() {
        on_event(Event::Note(format!("{} is finished: kept", dir.display())));
    } else {
        on_event(Event::Note("multitask: every task at once".into()));
        let _ = std::fs::remove_file(dir.join(SCORES_FILE));
        let resume = dir.join("LATEST").is_file();
        super::multitask::run(&cfg.multitask_config(dir), resume, on_event)?;
        *trained += 1;
    }
    let all: Vec<&TaskEval> = evals.iter().collect();
    let last = row(&scores(cfg, Some(dir), &all, dir, &mut |n| on_event(Event::Note(n)))?, evals)?;
    let average_final = last.iter().sum::<f64>() / last.len() as f64;
    Ok(MethodReport {
        method: Method::Multitask,
        stages: vec![dir.to_path_buf()],
        r: vec![last],
        average_final,
        metrics: None,
    })
}
