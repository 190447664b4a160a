//! Scores of `graft continual`: a model (the base, or what a finished run trained) scored on a
//! task's eval file — its held-out next-token loss (as every run's evaluation computes it) or
//! its label-scoring accuracy (as `graft eval classify` computes it). A folder's scores are
//! kept in its `scores.json`, so a rerun scores only what is missing.

use super::classify_eval::{classify, read_classify_data};
use super::finetune::held_out_batches;
use super::from_run::{finished_run, EarlierRun};
use super::parts::eval_loss;
use crate::assets::resolve_model;
use crate::config::continual::{in_task, ContinualConfig, TaskScore};
use crate::device::{parse_device, parse_dtype};
use crate::models::llama::{KeepLayers, Llama, LoadOptions, WeightFormat};
use crate::models::load::load_causal_lm_keeping;
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file a folder's scores are kept in.
pub const SCORES_FILE: &str = "scores.json";

/// A task's eval file, resolved (built first for `dataset:NAME/FILE`).
#[derive(Debug, Clone)]
pub struct TaskEval {
    /// Index of the task in the sequence.
    pub index: usize,
    /// The task's name.
    pub name: String,
    /// The eval file.
    pub path: PathBuf,
}

/// Every task's eval file; a missing file is an error naming the task.
pub fn eval_files(cfg: &ContinualConfig, on_note: &mut dyn FnMut(String)) -> Result<Vec<TaskEval>> {
    cfg.tasks
        .iter()
        .enumerate()
        .map(|(index, task)| {
            let named = |e| in_task(&task.name, e);
            let eval = task.eval.as_ref().ok_or_else(|| {
                GraftError::Input(format!("task `{}`: config key `tasks.eval` is required", task.name))
            })?;
            let path = super::data_build::resolve(eval, on_note).map_err(named)?;
            if !path.is_file() {
                return Err(GraftError::Input(format!(
                    "task `{}`: eval file {} does not exist",
                    task.name,
                    path.display()
                )));
            }
            Ok(TaskEval { index, name: task.name.clone(), path })
        })
        .collect()
}

/// Loads the model a score is measured on: the config's base model (`run` = `None`), or what
/// the finished run `run` trained (its model folder, or its base with its LoRA adapter
/// attached — for a chain of kept adapters, the first stage's base).
pub fn load_scored(cfg: &ContinualConfig, run: Option<&Path>) -> Result<(Llama, Tokenizer)> {
    let load = |name: &str, keep: Option<&KeepLayers>| -> Result<(Llama, Tokenizer)> {
        let source = resolve_model(name, false)?;
        let tokenizer = Tokenizer::from_source(&source)?;
        let opts = LoadOptions {
            device: parse_device(&cfg.model.device)?,
            dtype: parse_dtype(&cfg.model.dtype)?,
            format: WeightFormat::Dense,
        };
        Ok((load_causal_lm_keeping(&source, &opts, keep)?, tokenizer))
    };
    match run.map(finished_run).transpose()? {
        None => load(&cfg.model.name, None),
        Some(EarlierRun::Model(dir)) => load(&dir.to_string_lossy(), None),
        Some(EarlierRun::Lora { model, adapter }) => {
            let (mut llama, tok) = load(&model.name, model.keep_layers.as_ref())?;
            crate::io::peft::load_lora(&adapter, &mut llama)?;
            Ok((llama, tok))
        }
    }
}

/// The score of `model` on task `eval.index` of `cfg`: its held-out loss (at most
/// `train.eval_batches` batches when set) or its label-scoring accuracy (at most
/// `train.eval_batches × train.batch_size` examples when set).
pub fn score_task(cfg: &ContinualConfig, model: &Llama, tok: &Tokenizer, eval: &TaskEval) -> Result<f64> {
    let task = &cfg.tasks[eval.index];
    let named = |e| in_task(&task.name, e);
    match task.score {
        TaskScore::Loss => {
            let tc = cfg.task_config(eval.index, &cfg.output.dir);
            let (examples, _) = crate::data::load_examples(&eval.path, task.format, tok, cfg.data.seq_len)
                .map_err(|e| named(e.into()))?;
            let device = crate::models::Model::device(model).clone();
            let batches = held_out_batches(&tc, &examples, tok.batch_pad_id(), &device)?;
            eval_loss(model, &batches).map_err(named)
        }
        TaskScore::Accuracy => {
            let limit = (cfg.train.eval_batches > 0).then_some(cfg.train.eval_batches * cfg.train.batch_size);
            let data = read_classify_data(&eval.path, task.format, tok, &[], limit).map_err(named)?;
            Ok(classify(model, tok, &data).map_err(named)?.report.accuracy)
        }
    }
}

/// The scores of the model of `run` (or the base, `None`) on `tasks`, kept in `dir/scores.json`
/// (`{task: score}`): the ones already there are read, the others measured (the model loads
/// only when one is missing) and added.
pub fn scores(
    cfg: &ContinualConfig,
    run: Option<&Path>,
    tasks: &[&TaskEval],
    dir: &Path,
    on_note: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, f64>> {
    let path = dir.join(SCORES_FILE);
    let mut kept: BTreeMap<String, f64> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| GraftError::Input(format!("{}: {e} (delete it to score again)", path.display())))?,
        Err(_) => BTreeMap::new(),
    };
    let missing: Vec<&&TaskEval> = tasks.iter().filter(|t| !kept.contains_key(&t.name)).collect();
    if !missing.is_empty() {
        let (model, tok) = load_scored(cfg, run)?;
        for task in missing {
            on_note(format!("scoring `{}` on {}", task.name, dir.display()));
            let score = score_task(cfg, &model, &tok, task)?;
            kept.insert(task.name.clone(), score);
        }
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
        let text = serde_json::to_string_pretty(&kept)?;
        std::fs::write(&path, &text).map_err(|e| GraftError::io(&path, e))?;
        // The scores as a rerun reads them back (JSON's decimal round trip may move the last
        // bit), so a first run and a rerun report the same numbers.
        kept = serde_json::from_str(&text)?;
    }
    Ok(kept)
}
