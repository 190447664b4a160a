//! `graft features progressive`: a progressive network learned over a sequence of tasks on a
//! frozen backbone's features: a sentence encoder's for text tasks, EfficientNet-Lite0's for the
//! classes of image datasets. Every task's training and held-out examples are embedded once; task `j`'s column is trained (its own run folder under `columns/`), the network is
//! saved, and every task's held-out accuracy is measured — the learned tasks `i ≤ j` by their
//! columns, the later ones reported as not learned yet — one row of the accuracy matrix per
//! stage. The matrix and the tasks go to `summary.json`.

use super::labelled::LabelledSets;
use crate::assets::resolve_model;
use crate::config::{read_toml, relative_to};
use crate::device::{parse_device, parse_dtype};
use crate::features::progressive::{
    fit_cnn_column, fit_encoder_column, CnnColumnsConfig, EncoderColumnsConfig, ProgressiveCnn, ProgressiveEncoder,
};
use crate::features::{encoder_features, fit_column, ProgressiveConfig, ProgressiveNet, RunOutput};
use crate::models::bert::SentenceEncoder;
use crate::models::efficientnet::EfficientNetLite;
use crate::recipes::image_train::{class_sample, load_backbone};
use crate::train::{Event, RunDir};
use crate::vision::classifier::{image_features, ImageInput};
use crate::vision::preprocess::Preprocess;
use crate::vision::{Image, ImageSet};
use crate::{GraftError, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Image tasks: the default side of the backbone's input images.
pub const DEFAULT_IMAGE_SIZE: usize = 64;

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
    /// When given (image tasks), the columns are copies of EfficientNet-Lite0's top units with
    /// lateral adapters and a linear head ([`ProgressiveCnn`]) instead of MLP heads on its
    /// pooled features; `head` is then not used.
    #[serde(default)]
    pub cnn_columns: Option<CnnColumnsConfig>,
    /// The tasks, learned in this order (at least one).
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    /// Where the run writes.
    pub output: OutputConfig,
}

/// The frozen backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// Sentence encoder for text tasks: an asset name or a Hugging Face BERT folder (as `graft
    /// embed --model`); for image tasks, EfficientNet-Lite0 (`efficientnet-lite0` or a
    /// `.safetensors` file).
    pub encoder: String,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Compute precision of the encoder: `f32` or `f64` (features are used as f32).
    pub dtype: String,
    /// Texts (or images) per backbone forward pass.
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

/// One task: a name and its data, a pair of JSONL files (text tasks) or an image dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The task's name, unique: it names its column, its run folder and its summary entries.
    pub name: String,
    /// Text tasks: training JSONL, one `{"text": ..., "label": ...}` per line (path relative to
    /// the config file). Its distinct labels, sorted, are the task's classes.
    #[serde(default)]
    pub train: Option<PathBuf>,
    /// Text tasks: held-out JSONL in the same form; every label must occur in `train`.
    #[serde(default)]
    pub eval: Option<PathBuf>,
    /// Image tasks: the image dataset whose classes are the task's (`fashion-mnist`, `mnist-5k`
    /// or `digits-8x8`), its training images to learn from and its test images to score.
    #[serde(default)]
    pub images: Option<String>,
    /// Image tasks: training images of each class, drawn with a fixed seed (0: all).
    #[serde(default)]
    pub train_per_class: usize,
    /// Image tasks: test images of each class, drawn with a fixed seed (0: all).
    #[serde(default)]
    pub eval_per_class: usize,
    /// Image tasks: the side images are resized and centre-cropped to before the backbone
    /// (default 64).
    #[serde(default)]
    pub image_size: Option<usize>,
}

impl TaskConfig {
    /// Refuses a task that is neither a text task (`train` and `eval`) nor an image task
    /// (`images`), or mixes both.
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(GraftError::Input(format!("task `{}`: {m}", self.name)));
        match (&self.images, &self.train, &self.eval) {
            (Some(_), None, None) if self.image_size == Some(0) => bad("image_size must be at least 1"),
            (Some(_), None, None) => Ok(()),
            (Some(_), _, _) => bad("give either `images` or `train` and `eval`, not both"),
            (None, Some(_), Some(_))
                if self.train_per_class + self.eval_per_class == 0 && self.image_size.is_none() =>
            {
                Ok(())
            }
            (None, Some(_), Some(_)) => bad("train_per_class, eval_per_class and image_size apply to image tasks only"),
            (None, _, _) => bad("give `train` and `eval` (JSONL files) or `images` (an image dataset)"),
        }
    }
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
            t.train = t.train.as_deref().map(|p| relative_to(base, p));
            t.eval = t.eval.as_deref().map(|p| relative_to(base, p));
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
            t.validate()?;
        }
        let images = self.tasks.iter().filter(|t| t.images.is_some()).count();
        if images > 0 && images < self.tasks.len() {
            return bad("the tasks mix image and text tasks: every column reads one backbone's features".into());
        }
        if images > 0 && self.encoder_columns.is_some() {
            return bad(
                "[encoder_columns] copies a sentence encoder's blocks: image tasks use [cnn_columns] or MLP-head columns"
                    .into(),
            );
        }
        if images == 0 && self.cnn_columns.is_some() {
            return bad("[cnn_columns] copies EfficientNet-Lite0's units: give image tasks (`images = ...`)".into());
        }

        if self.backbone.batch_size == 0 {
            return bad("backbone: batch_size must be at least 1".into());
        }
        if let Some(ec) = &self.encoder_columns {
            // The block count is checked against the encoder once it is loaded.
            ec.validate(usize::MAX)?;
        }
        if let Some(cc) = &self.cnn_columns {
            cc.validate()?;
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
    /// The column settings of CNN-unit columns, when the run used them.
    pub cnn_columns: Option<CnnColumnsConfig>,
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

/// A task's data: texts (none for image tasks) and labels, and their features for MLP-head
/// columns (for CNN columns, the shared units' maps).
struct TaskData {
    labels: Vec<String>,
    train: (Vec<String>, Vec<usize>),
    eval: (Vec<String>, Vec<usize>),
    features: Option<(Tensor, Tensor)>,
}

/// The frozen backbone of a run.
enum Backbone {
    Text(Box<SentenceEncoder>),
    Image(Box<EfficientNetLite>),
}

impl Backbone {
    fn load(b: &BackboneConfig, images: bool) -> Result<Self> {
        let (device, dtype) = (parse_device(&b.device)?, parse_dtype(&b.dtype)?);
        if images {
            return Ok(Backbone::Image(Box::new(load_backbone(&b.encoder, b.offline, &device, dtype)?)));
        }
        Ok(Backbone::Text(Box::new(SentenceEncoder::load(&resolve_model(&b.encoder, b.offline)?, &device, dtype)?)))
    }

    /// Reads task `t`: text tasks embedded when `embed`; image tasks as pooled features, or as
    /// the maps of the units below the top `cnn_units` when given.
    fn task(&self, t: &TaskConfig, b: &BackboneConfig, embed: bool, cnn_units: Option<usize>) -> Result<TaskData> {
        match (self, &t.images) {
            (Backbone::Text(enc), None) => load_task(t, enc, b.batch_size, embed),
            (Backbone::Image(model), Some(set)) => load_image_task(t, set, model, b, cnn_units),
            _ => Err(GraftError::Input(format!("task `{}` does not match the backbone's kind of input", t.name))),
        }
    }
}

fn load_task(t: &TaskConfig, enc: &SentenceEncoder, batch: usize, embed: bool) -> Result<TaskData> {
    let (Some(train), Some(eval)) = (&t.train, &t.eval) else {
        return Err(GraftError::Input(format!("task `{}` has no `train` and `eval` files", t.name)));
    };
    let sets =
        LabelledSets::read(train, eval, None).map_err(|e| GraftError::Input(format!("task `{}`: {e}", t.name)))?;
    let (train, eval) = (sets.train_texts(), sets.eval_texts());
    let features =
        if embed { Some((encoder_features(enc, &train, batch)?, encoder_features(enc, &eval, batch)?)) } else { None };
    Ok(TaskData { train: (train, sets.train_y), eval: (eval, sets.eval_y), labels: sets.labels, features })
}

/// Image task `t`: `train_per_class` training and `eval_per_class` test images of every class of
/// dataset `set` (drawn with seed 0) and their pooled features through the frozen `model`, or
/// with `cnn_units`, the maps of its units below the top `cnn_units`.
fn load_image_task(
    t: &TaskConfig,
    set: &str,
    model: &EfficientNetLite,
    b: &BackboneConfig,
    cnn_units: Option<usize>,
) -> Result<TaskData> {
    let (train, test, names) = crate::recipes::image_train::load_dataset(set, b.offline)
        .map_err(|e| GraftError::Input(format!("task `{}`: {e}", t.name)))?;
    let size = t.image_size.unwrap_or(DEFAULT_IMAGE_SIZE);
    let input = ImageInput {
        preprocess: Preprocess { resize: size, ..Preprocess::imagenet(size) },
        augment: None,
        batch: b.batch_size,
    };
    let (train_images, train_y) = per_class(&train, names.len(), t.train_per_class, 0);
    let (eval_images, eval_y) = per_class(&test, names.len(), t.eval_per_class, 1);
    if train_y.is_empty() || eval_y.is_empty() {
        return Err(GraftError::Input(format!("task `{}`: `{set}` gave no training or no test images", t.name)));
    }
    let features = match cnn_units {
        None => (image_features(model, &train_images, &input)?, image_features(model, &eval_images, &input)?),
        Some(top) => {
            let shared = ProgressiveCnn::new(model.clone(), top)?;
            (shared.bottom_maps(&train_images, &input)?, shared.bottom_maps(&eval_images, &input)?)
        }
    };
    Ok(TaskData { labels: names, train: (Vec::new(), train_y), eval: (Vec::new(), eval_y), features: Some(features) })
}

/// At most `limit` images of each of the `n_classes` classes of `s` (0: all), drawn with seed 0 in
/// the stream of `split`, and their labels.
fn per_class(s: &ImageSet, n_classes: usize, limit: usize, split: u64) -> (Vec<&Image>, Vec<usize>) {
    let mut idx: Vec<usize> =
        (0..n_classes).flat_map(|c| class_sample(&s.labels, c, limit, 0, (split << 32) | c as u64)).collect();
    idx.sort_unstable();
    (idx.iter().map(|&i| &s.images[i]).collect(), idx.iter().map(|&i| s.labels[i]).collect())
}

/// The network being grown: MLP heads on features, copies of the encoder's top blocks, or
/// copies of the CNN's top units.
enum Columns {
    Heads(ProgressiveNet),
    Blocks(Box<(ProgressiveEncoder, EncoderColumnsConfig)>),
    Units(Box<(ProgressiveCnn, CnnColumnsConfig)>),
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
            Columns::Units(u) => {
                let (net, cc) = &mut **u;
                let maps = &d.features.as_ref().expect("CNN columns read the shared maps").0;
                fit_cnn_column(net, &t.name, &d.labels, maps, &d.train.1, cc, out)?;
                net.save(path)
            }
        }
    }

    /// Held-out accuracy of `task`'s column on `d`.
    fn accuracy(&self, task: &str, d: &TaskData, batch: usize) -> Result<f64> {
        let pred = match self {
            Columns::Heads(net) => net.predict(task, &d.features.as_ref().expect("embedded").1)?,
            Columns::Blocks(b) => b.0.predict(task, &d.eval.0, batch)?,
            Columns::Units(u) => u.0.predict(task, &d.features.as_ref().expect("maps").1, batch)?,
        };
        let y = &d.eval.1;
        Ok(pred.iter().zip(y).filter(|(p, l)| p == l).count() as f64 / y.len().max(1) as f64)
    }

    /// Trainable parameters of column `k`, and of all columns.
    fn params(&self, k: usize) -> Result<(usize, usize)> {
        Ok(match self {
            Columns::Heads(net) => (net.columns()[k].trainable_params(), net.trainable_params()),
            Columns::Blocks(b) => (b.0.columns()[k].params(), b.0.trainable_params()),
            Columns::Units(u) => (u.0.column_params(k)?, u.0.trainable_params()?),
        })
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
    on_event(Event::Note(format!("loading backbone `{}`", b.encoder)));
    let backbone = Backbone::load(b, cfg.tasks.iter().any(|t| t.images.is_some()))?;
    let embed = cfg.encoder_columns.is_none();
    let cnn_units = cfg.cnn_columns.as_ref().map(|c| c.top_units);
    let mut data = Vec::with_capacity(cfg.tasks.len());
    for t in &cfg.tasks {
        on_event(Event::Note(format!("reading task `{}`", t.name)));
        data.push(backbone.task(t, b, embed, cnn_units)?);
    }
    let mut net = match (&cfg.encoder_columns, &cfg.cnn_columns, backbone) {
        (None, None, Backbone::Text(enc)) => Columns::Heads(ProgressiveNet::new(enc.dim(), cfg.head.hidden.clone())?),
        (None, None, Backbone::Image(model)) => {
            Columns::Heads(ProgressiveNet::new(model.feature_dim(), cfg.head.hidden.clone())?)
        }
        (Some(ec), None, Backbone::Text(enc)) => {
            ec.validate(enc.model().config().num_hidden_layers)?;
            Columns::Blocks(Box::new((ProgressiveEncoder::new(*enc, ec.top_layers)?, ec.clone())))
        }
        (None, Some(cc), Backbone::Image(model)) => {
            Columns::Units(Box::new((ProgressiveCnn::new(*model, cc.top_units)?, cc.clone())))
        }
        (Some(_), _, _) => return Err(GraftError::Input("[encoder_columns] needs a sentence encoder".into())),
        (_, Some(_), _) => return Err(GraftError::Input("[cnn_columns] needs image tasks".into())),
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
            column_params: net.params(k)?.0,
            run,
        });
    }
    let summary = ProgressiveSummary {
        tasks,
        accuracy,
        network: net_path,
        trainable_params: net.params(0)?.1,
        encoder: b.encoder.clone(),
        head: cfg.head.clone(),
        encoder_columns: cfg.encoder_columns.clone(),
        cnn_columns: cfg.cnn_columns.clone(),
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
