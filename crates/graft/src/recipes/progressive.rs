//! `graft features progressive`: a progressive network learned over a sequence of tasks on a
//! frozen sentence encoder's features. Every task's training and held-out texts are embedded
//! once; task `j`'s column is trained (its own run folder under `columns/`), the network is
//! saved, and every task's held-out accuracy is measured — the learned tasks `i ≤ j` by their
//! columns, the later ones reported as not learned yet — one row of the accuracy matrix per
//! stage. The matrix and the tasks go to `summary.json`.

use super::labelled::LabelledSets;
use crate::assets::resolve_model;
use crate::config::{read_toml, relative_to};
use crate::device::{parse_device, parse_dtype};
use crate::features::progressive::{fit_encoder_column, EncoderColumnsConfig, ProgressiveEncoder};
use crate::features::{encoder_features, fit_column, ProgressiveConfig, ProgressiveNet, RunOutput};
use crate::models::bert::SentenceEncoder;
use crate::train::{Event, RunDir};
use crate::{GraftError, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The network's file in the output folder.
pub const NET_FILE: &str = "progressive.safetensors";

/// The config of `graft features progressive` (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressiveRunConfig {
    /// The frozen backbone whose features every column reads.
    #[serde(default)]
    pub backbone: BackboneConfig,
    /// Shape and training of every column (`hidden`, `epochs`, `batch_size`, `lr`,
    /// `weight_decay`, `seed`), for columns of MLP heads on the encoder's features.
    #[serde(default)]
    pub head: ProgressiveConfig,
    /// When given, the columns are copies of the encoder's top blocks with lateral adapters
    /// and a linear head ([`ProgressiveEncoder`]) instead of MLP heads on its features; `head`
    /// is then not used.
    #[serde(default)]
    pub encoder_columns: Option<EncoderColumnsConfig>,
    /// The tasks, learned in this order (at least one).
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    /// Where the run writes.
    pub output: OutputConfig,
}

/// The frozen sentence encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// Sentence encoder: an asset name or a Hugging Face BERT folder (as `graft embed --model`).
    pub encoder: String,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Compute precision of the encoder: `f32` or `f64` (features are used as f32).
    pub dtype: String,
    /// Texts per encoder forward pass.
    pub batch_size: usize,
    /// Never download: fail if the encoder is not in the cache.
    pub offline: bool,
}

impl Default for BackboneConfig {
    /// all-MiniLM-L6-v2 on the CPU in f32, 32 texts per pass.
    fn default() -> Self {
        Self {
            encoder: "all-minilm-l6-v2".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            batch_size: 32,
            offline: false,
        }
    }
}

/// One task: a name and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The task's name, unique: it names its column, its run folder and its summary entries.
    pub name: String,
    /// Training JSONL, one `{"text": ..., "label": ...}` per line (path relative to the config
    /// file). Its distinct labels, sorted, are the task's classes.
    pub train: PathBuf,
    /// Held-out JSONL in the same form; every label must occur in `train`.
    pub eval: PathBuf,
}

/// The output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The run's folder: `progressive.safetensors`, `summary.json`, `columns/K-NAME/`.
    pub dir: PathBuf,
}

impl ProgressiveRunConfig {
    /// Reads `path` with `overrides` (`section.key=value`); data paths are resolved against the
    /// config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for t in &mut cfg.tasks {
            t.train = relative_to(base, &t.train);
            t.eval = relative_to(base, &t.eval);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses configs that cannot run, naming the key or task.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        if self.tasks.is_empty() {
            return bad("no [[tasks]]: give at least one task (name, train, eval)".into());
        }
        let mut seen = BTreeSet::new();
        for t in &self.tasks {
            if t.name.trim().is_empty() {
                return bad("a task has an empty name".into());
            }
            if !seen.insert(t.name.as_str()) {
                return bad(format!("task `{}` is listed twice: task names must be unique", t.name));
            }
        }
        if self.backbone.batch_size == 0 {
            return bad("backbone: batch_size must be at least 1".into());
        }
        if let Some(ec) = &self.encoder_columns {
            // The block count is checked against the encoder once it is loaded.
            ec.validate(usize::MAX)?;
        }
        self.head.validate()
    }
}

/// What the run did: the tasks, and their held-out accuracy after every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressiveSummary {
    /// The tasks, in the order learned.
    pub tasks: Vec<TaskSummary>,
    /// `accuracy[j][i]`: task `i`'s held-out accuracy after learning task `j`; `None` (JSON
    /// `null`) for tasks not learned yet (`i > j`).
    pub accuracy: Vec<Vec<Option<f64>>>,
    /// The saved network.
    pub network: PathBuf,
    /// Trainable parameters of all columns.
    pub trainable_params: usize,
    /// The encoder the features come from.
    pub encoder: String,
    /// The column settings of MLP-head columns.
    pub head: ProgressiveConfig,
    /// The column settings of encoder-block columns, when the run used them.
    pub encoder_columns: Option<EncoderColumnsConfig>,
}

/// One task of a [`ProgressiveSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task's name.
    pub name: String,
    /// Its classes.
    pub labels: Vec<String>,
    /// Training examples.
    pub train_examples: usize,
    /// Held-out examples.
    pub eval_examples: usize,
    /// Trainable parameters of its column (layers and lateral adapters).
    pub column_params: usize,
    /// Its column's run folder (`metrics.jsonl`, the trainer's `summary.json`).
    pub run: PathBuf,
}

/// A task's data: texts and labels, and their embeddings for MLP-head columns.
struct TaskData {
    labels: Vec<String>,
    train: (Vec<String>, Vec<usize>),
    eval: (Vec<String>, Vec<usize>),
    features: Option<(Tensor, Tensor)>,
}

fn load_task(t: &TaskConfig, enc: &SentenceEncoder, batch: usize, embed: bool) -> Result<TaskData> {
    let sets = LabelledSets::read(&t.train, &t.eval, None)
        .map_err(|e| GraftError::Input(format!("task `{}`: {e}", t.name)))?;
    let (train, eval) = (sets.train_texts(), sets.eval_texts());
    let features =
        if embed { Some((encoder_features(enc, &train, batch)?, encoder_features(enc, &eval, batch)?)) } else { None };
    Ok(TaskData { train: (train, sets.train_y), eval: (eval, sets.eval_y), labels: sets.labels, features })
}

/// The network being grown: MLP heads on features, or copies of the encoder's top blocks.
enum Columns {
    Heads(ProgressiveNet),
    Blocks(Box<(ProgressiveEncoder, EncoderColumnsConfig)>),
}

impl Columns {
    /// Learns `t` as the next column and saves the network to `path`.
    fn learn(
        &mut self,
        t: &TaskConfig,
        d: &TaskData,
        head: &ProgressiveConfig,
        out: RunOutput,
        path: &Path,
    ) -> Result<()> {
        match self {
            Columns::Heads(net) => {
                let x = &d.features.as_ref().expect("head columns embed their tasks").0;
                fit_column(net, &t.name, &d.labels, x, &d.train.1, head, out)?;
                net.save(path)
            }
            Columns::Blocks(b) => {
                let (net, ec) = &mut **b;
                fit_encoder_column(net, &t.name, &d.labels, &d.train.0, &d.train.1, ec, out)?;
                net.save(path)
            }
        }
    }

    /// Held-out accuracy of `task`'s column on `d`.
    fn accuracy(&self, task: &str, d: &TaskData, batch: usize) -> Result<f64> {
        let pred = match self {
            Columns::Heads(net) => net.predict(task, &d.features.as_ref().expect("embedded").1)?,
            Columns::Blocks(b) => b.0.predict(task, &d.eval.0, batch)?,
        };
        let y = &d.eval.1;
        Ok(pred.iter().zip(y).filter(|(p, l)| p == l).count() as f64 / y.len().max(1) as f64)
    }

    /// Trainable parameters of column `k`, and of all columns.
    fn params(&self, k: usize) -> (usize, usize) {
        match self {
            Columns::Heads(net) => (net.columns()[k].trainable_params(), net.trainable_params()),
            Columns::Blocks(b) => (b.0.columns()[k].params(), b.0.trainable_params()),
        }
    }
}

/// Runs the config: reads (and, for MLP-head columns, embeds) every task's data, learns the
/// tasks in order (a column each) and fills the accuracy matrix. An output folder that already
/// holds a network is refused.
pub fn run(cfg: &ProgressiveRunConfig, on_event: &mut dyn FnMut(Event)) -> Result<ProgressiveSummary> {
    cfg.validate()?;
    let out = &cfg.output.dir;
    let net_path = out.join(NET_FILE);
    if net_path.exists() {
        return Err(GraftError::Input(format!(
            "{} already holds a progressive network: choose another output.dir or remove it",
            out.display()
        )));
    }
    let b = &cfg.backbone;
    on_event(Event::Note(format!("loading encoder `{}`", b.encoder)));
    let enc = SentenceEncoder::load(
        &resolve_model(&b.encoder, b.offline)?,
        &parse_device(&b.device)?,
        parse_dtype(&b.dtype)?,
    )?;
    let embed = cfg.encoder_columns.is_none();
    let mut data = Vec::with_capacity(cfg.tasks.len());
    for t in &cfg.tasks {
        on_event(Event::Note(format!("reading task `{}`", t.name)));
        data.push(load_task(t, &enc, b.batch_size, embed)?);
    }
    let mut net = match &cfg.encoder_columns {
        None => Columns::Heads(ProgressiveNet::new(enc.dim(), cfg.head.hidden.clone())?),
        Some(ec) => {
            ec.validate(enc.model().config().num_hidden_layers)?;
            Columns::Blocks(Box::new((ProgressiveEncoder::new(enc, ec.top_layers)?, ec.clone())))
        }
    };
    let (mut accuracy, mut tasks) = (Vec::new(), Vec::new());
    for (k, (t, d)) in cfg.tasks.iter().zip(&data).enumerate() {
        on_event(Event::Note(format!("learning task `{}` (column {k})", t.name)));
        let run = out.join("columns").join(format!("{k}-{}", t.name));
        let output = RunOutput { dir: Some(RunDir::open(&run, false, 0)?), on_event: &mut *on_event };
        net.learn(t, d, &cfg.head, output, &net_path)?;
        let mut row = Vec::with_capacity(cfg.tasks.len());
        for (i, (ti, di)) in cfg.tasks.iter().zip(&data).enumerate() {
            row.push(if i <= k { Some(net.accuracy(&ti.name, di, b.batch_size)?) } else { None });
        }
        on_event(Event::Note(format!("after `{}`: {}", t.name, row_text(&cfg.tasks, &row))));
        accuracy.push(row);
        tasks.push(TaskSummary {
            name: t.name.clone(),
            labels: d.labels.clone(),
            train_examples: d.train.1.len(),
            eval_examples: d.eval.1.len(),
            column_params: net.params(k).0,
            run,
        });
    }
    let summary = ProgressiveSummary {
        tasks,
        accuracy,
        network: net_path,
        trainable_params: net.params(0).1,
        encoder: b.encoder.clone(),
        head: cfg.head.clone(),
        encoder_columns: cfg.encoder_columns.clone(),
    };
    crate::io::write_atomic(&out.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

fn row_text(tasks: &[TaskConfig], row: &[Option<f64>]) -> String {
    let cells = tasks.iter().zip(row).filter_map(|(t, a)| a.map(|a| format!("{} {:.3}", t.name, a)));
    cells.collect::<Vec<_>>().join(", ")
}

/// The accuracy matrix as a text table: one row per stage ("after TASK"), one column per task,
/// `-` for tasks not learned yet.
pub fn accuracy_table(summary: &ProgressiveSummary) -> String {
    let names: Vec<&str> = summary.tasks.iter().map(|t| t.name.as_str()).collect();
    let first = names.iter().map(|n| n.len() + 6).max().unwrap_or(0).max(12);
    let widths: Vec<usize> = names.iter().map(|n| n.len().max(8)).collect();
    let mut out = format!("{:<first$}", "accuracy");
    for (n, w) in names.iter().zip(&widths) {
        out += &format!("  {n:>w$}");
    }
    for (name, row) in names.iter().zip(&summary.accuracy) {
        out += &format!("\n{:<first$}", format!("after {name}"));
        for (a, w) in row.iter().zip(&widths) {
            let cell = a.map_or("-".to_string(), |a| format!("{a:.3}"));
            out += &format!("  {cell:>w$}");
        }
    }
    out
}
