//! Progressive networks over a CNN's own units (Rusu et al. 2016, in the paper's convolutional
//! form, on the pretrained EfficientNet-Lite0): every task gets a **column**, a trainable copy of
//! the backbone's top `top_units` units (in [`EfficientNetLite::unfreeze_top`]'s counting: the
//! head convolution, then the stages from the seventh down) and a linear head on their pooled
//! output. The units below are shared and frozen, and run once per image. Column `k` also reads
//! the earlier columns through **lateral adapters**: into its unit `l > 0` goes
//! `Σ_{j<k} U·gelu(V·h_j)` over the channels of column `j`'s map below (a pair of 1x1
//! convolutions), and the same on the pooled vectors into its head. `U` starts at zero, so a new
//! column starts as a plain copy of the pretrained units; earlier columns are frozen, so their
//! tasks' logits are bit-identical after later tasks are learned. Batch norms keep the
//! checkpoint's running statistics (frozen batch norm, as for fine-tuning the top units).
//!
//! Training runs on the one [`Trainer`](crate::train::Trainer) through [`CnnColumnObjective`]:
//! the copied units at `lr ×` [`BLOCK_LR_RATIO`], the adapters and head at `lr`.

use super::super::head::{argmax_rows, check_labels, fit_epochs, HeadConfig, HeadKind, RunOutput};
use super::super::tune::BLOCK_LR_RATIO;
use super::lateral::{LateralHead, Shape};
use super::ColumnDescription;
use crate::models::efficientnet::{EfficientNetLite, LITE0_UNITS};
use crate::report::LossPoint;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::vision::classifier::ImageInput;
use crate::vision::Image;
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// How CNN columns are shaped and trained (every column alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnColumnsConfig {
    /// Units each column copies and trains, from the top (1: the head convolution; 2: it and the
    /// seventh stage; up to 9, the whole network).
    pub top_units: usize,
    /// Inner width of each lateral adapter `U·gelu(V·h)`.
    pub lateral_rank: usize,
    /// Passes over each task's training images.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate of the head and adapters; the copied units train at
    /// `lr ×` [`BLOCK_LR_RATIO`].
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the shuffling; column `k`'s fresh weights are drawn from `seed + k`.
    pub seed: u64,
}

impl Default for CnnColumnsConfig {
    /// The top 2 units, adapters of rank 16, 5 epochs of 32 images, AdamW at 1e-2 (units at
    /// 1e-4) with weight decay 1e-2, seed 0.
    fn default() -> Self {
        Self { top_units: 2, lateral_rank: 16, epochs: 5, batch_size: 32, lr: 1e-2, weight_decay: 1e-2, seed: 0 }
    }
}

impl CnnColumnsConfig {
    /// Refuses settings that cannot train, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.top_units == 0 || self.top_units > LITE0_UNITS {
            return Err(GraftError::Input(format!(
                "cnn_columns.top_units must be between 1 and EfficientNet-Lite0's {LITE0_UNITS} units, got {}",
                self.top_units
            )));
        }
        if self.lateral_rank == 0 {
            return Err(GraftError::Input("cnn_columns.lateral_rank must be at least 1".into()));
        }
        self.head_config().validate()
    }

    fn head_config(&self) -> HeadConfig {
        HeadConfig {
            kind: HeadKind::Linear,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            ..HeadConfig::default()
        }
    }
}

/// One task's column: its copy of the network (the top units its own, the rest shared with the
/// base), its lateral adapters and its head.
#[derive(Debug, Clone)]
pub struct CnnColumn {
    task: String,
    labels: Vec<String>,
    model: EfficientNetLite,
    top: LateralHead,
}

impl CnnColumn {
    /// The task this column serves.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Its class names, in label-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

/// The header key of [`ProgressiveCnn::save`]'s description.
pub const CNN_METADATA_KEY: &str = "graft.progressive_cnn";
/// The description's format tag.
pub const CNN_FORMAT: &str = "graft-progressive-cnn/1";

/// The JSON description of saved CNN columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnNetDescription {
    /// [`CNN_FORMAT`].
    pub format: String,
    /// Units each column copies.
    pub top_units: usize,
    /// The columns in task order.
    pub columns: Vec<ColumnDescription>,
}

/// A frozen EfficientNet-Lite0 and the columns learned on top of its lower units, in task order.
#[derive(Debug, Clone)]
pub struct ProgressiveCnn {
    base: EfficientNetLite,
    top_units: usize,
    columns: Vec<CnnColumn>,
}

impl ProgressiveCnn {
    /// An empty network over `base` whose columns copy its top `top_units` units.
    pub fn new(base: EfficientNetLite, top_units: usize) -> Result<Self> {
        CnnColumnsConfig { top_units, ..CnnColumnsConfig::default() }.validate()?;
        Ok(Self { base, top_units, columns: Vec::new() })
    }

    /// The columns, in task order.
    pub fn columns(&self) -> &[CnnColumn] {
        &self.columns
    }

    /// Units each column copies.
    pub fn top_units(&self) -> usize {
        self.top_units
    }

    /// The index of `task`'s column, or an error naming the tasks there are.
    pub fn task_index(&self, task: &str) -> Result<usize> {
        self.columns.iter().position(|c| c.task == task).ok_or_else(|| {
            let known: Vec<&str> = self.columns.iter().map(|c| c.task.as_str()).collect();
            GraftError::Input(format!("unknown task `{task}`: the network's tasks are {}", known.join(", ")))
        })
    }

    /// The shared frozen units' output maps of `images` (the columns' input; the preprocessed
    /// images themselves when the columns copy every unit), in batches of `input.batch`, without
    /// gradients. Computing them once lets training run only the columns.
    pub fn bottom_maps(&self, images: &[&Image], input: &ImageInput) -> Result<Tensor> {
        if input.batch == 0 {
            return Err(GraftError::Input("images per backbone pass must be at least 1".into()));
        }
        let (device, dtype) = (self.base.device(), self.base.dtype());
        let mut parts = Vec::with_capacity(images.len().div_ceil(input.batch));
        for chunk in images.chunks(input.batch) {
            let x = input.preprocess.batch(chunk, None, &device)?.to_dtype(dtype)?;
            parts.push(self.base.run_units(&x, 0..self.first_unit(), false)?.detach());
        }
        if parts.is_empty() {
            return Err(GraftError::Input("no images to compute the shared units' maps of".into()));
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Logits `[n, classes]` of `task`'s column for the shared units' `maps` (from
    /// [`Self::bottom_maps`]), in batches of `batch` (inference; only the columns up to
    /// `task`'s run).
    pub fn logits(&self, task: &str, maps: &Tensor, batch: usize) -> Result<Tensor> {
        let k = self.task_index(task)?;
        let n = maps.dim(0)?;
        let mut parts = Vec::new();
        for start in (0..n).step_by(batch.max(1)) {
            let chunk = maps.narrow(0, start, batch.max(1).min(n - start))?;
            parts.push(self.forward(&self.columns[..=k], None, &chunk)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The class index of each map's image for `task`.
    pub fn predict(&self, task: &str, maps: &Tensor, batch: usize) -> Result<Vec<usize>> {
        argmax_rows(&self.logits(task, maps, batch)?)
    }

    /// Trainable parameters of column `k` (copied units, adapters, head).
    pub fn column_params(&self, k: usize) -> Result<usize> {
        let c = &self.columns[k];
        let units: usize = c.model.top_unit_tensors(self.top_units)?.iter().map(|(_, t)| t.elem_count()).sum();
        Ok(units + c.top.params())
    }

    /// Trainable parameters of all columns.
    pub fn trainable_params(&self) -> Result<usize> {
        (0..self.columns.len()).map(|k| self.column_params(k)).sum()
    }

    /// Writes the columns as one safetensors file (`columns.{k}.unit.<checkpoint name>` for the
    /// copied units' trained tensors, `columns.{k}.lateral.{level}.{j}.{v,u}`,
    /// `columns.{k}.head.{weight,bias}`) with a [`CnnNetDescription`] in the header, atomically.
    /// The shared base is not written: [`ProgressiveCnn::load`] takes it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = Vec::new();
        for (k, c) in self.columns.iter().enumerate() {
            for (name, t) in c.model.top_unit_tensors(self.top_units)? {
                map.push((format!("columns.{k}.unit.{name}"), t.detach()));
            }
            c.top.save_into(k, &mut map);
        }
        let meta = HashMap::from([(CNN_METADATA_KEY.to_string(), serde_json::to_string(&self.description())?)]);
        crate::io::safetensors::save_atomic_with_metadata(map, meta, path)
    }

    /// Reads columns written by [`ProgressiveCnn::save`] on top of `base` (the network they were
    /// learned on). A missing description or tensor, or one whose shape does not fit, is an
    /// error naming the file.
    pub fn load(path: &Path, base: EfficientNetLite) -> Result<Self> {
        let file = crate::io::safetensors::open_safetensors(path)?;
        let bad = |m: String| GraftError::model(path, m);
        let text = file.user_metadata().and_then(|m| m.get(CNN_METADATA_KEY)).ok_or_else(|| {
            bad(format!("no `{CNN_METADATA_KEY}` description; was it written by ProgressiveCnn::save?"))
        })?;
        let desc: CnnNetDescription =
            serde_json::from_str(text).map_err(|e| bad(format!("the `{CNN_METADATA_KEY}` description: {e}")))?;
        if desc.format != CNN_FORMAT {
            return Err(bad(format!("format `{}`, expected `{CNN_FORMAT}`", desc.format)));
        }
        let (dtype, device) = (base.dtype(), base.device());
        let mut net = Self::new(base, desc.top_units).map_err(|e| bad(e.to_string()))?;
        let mut map = file.load_all(&device)?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = map.remove(name).ok_or_else(|| bad(format!("lacks tensor `{name}`")))?;
            Ok(t.to_dtype(dtype)?)
        };
        let unit_names: Vec<String> =
            net.base.top_unit_tensors(net.top_units)?.into_iter().map(|(name, _)| name).collect();
        for (k, cd) in desc.columns.into_iter().enumerate() {
            let mut own = HashMap::new();
            for name in &unit_names {
                own.insert(name.clone(), take(&format!("columns.{k}.unit.{name}"))?);
            }
            let tensors = net.base.named_tensors().into_iter().map(|(n, t)| {
                let t = own.remove(&n).unwrap_or(t);
                (n, t)
            });
            let model = EfficientNetLite::from_tensors(tensors.collect(), &device, dtype)
                .map_err(|e| bad(format!("column {k}: {e}")))?;
            let width = |level| net.level_width(level);
            let shape = Shape { k, levels: net.top_units + 1, width: &width, n_labels: cd.labels.len() };
            let top = LateralHead::load(&shape, &mut take, &|m| bad(m))?;
            net.columns.push(CnnColumn { task: cd.task, labels: cd.labels, model, top });
        }
        Ok(net)
    }

    /// What [`ProgressiveCnn::save`] writes into the header.
    pub fn description(&self) -> CnnNetDescription {
        CnnNetDescription {
            format: CNN_FORMAT.to_string(),
            top_units: self.top_units,
            columns: self
                .columns
                .iter()
                .map(|c| ColumnDescription { task: c.task.clone(), labels: c.labels.clone() })
                .collect(),
        }
    }

    /// The first unit the columns copy (in [`EfficientNetLite::run_units`]' numbering).
    fn first_unit(&self) -> usize {
        LITE0_UNITS - self.top_units
    }

    /// Channels of what lateral adapters into `level` read: the map of the unit below it, or
    /// the pooled head output at the last level.
    fn level_width(&self, level: usize) -> usize {
        EfficientNetLite::unit_channels(self.first_unit() + level.max(1) - 1)
    }

    /// Logits of the last column: `frozen` columns first (their outputs detached when a column
    /// trains), then `training` when given, else the last of `frozen`.
    fn forward(&self, frozen: &[CnnColumn], training: Option<&CnnColumn>, bottom: &Tensor) -> Result<Tensor> {
        let first = self.first_unit();
        // outputs[j][l]: column j after its unit l; the last entry is the pooled output.
        let mut outputs: Vec<Vec<Tensor>> = Vec::new();
        let all: Vec<&CnnColumn> = frozen.iter().chain(training).collect();
        let mut logits = None;
        for (k, col) in all.iter().enumerate() {
            let mut x = bottom.clone();
            let mut outs = Vec::with_capacity(self.top_units + 1);
            for l in 0..self.top_units {
                if l > 0 {
                    x = col.top.add_laterals(x, &outputs, l, l - 1)?;
                }
                x = col.model.run_units(&x, first + l..first + l + 1, false)?;
                outs.push(x.clone());
            }
            let pooled = x.mean((2, 3))?;
            let z = col.top.add_laterals(pooled.clone(), &outputs, self.top_units, self.top_units)?;
            outs.push(pooled);
            let frozen_col = k < frozen.len() && training.is_some();
            outputs.push(if frozen_col { outs.into_iter().map(|t| t.detach()).collect() } else { outs });
            if k + 1 == all.len() {
                logits = Some(col.top.logits(&z)?);
            }
        }
        logits.ok_or_else(|| GraftError::Input("the network has no column yet".into()))
    }
}

/// The objective of a new CNN column: summed cross-entropy of its logits on the task's images
/// (given as the shared units' maps), one unit per image, `accuracy` as its metric. A batch is a
/// list of example indices.
pub struct CnnColumnObjective<'a> {
    net: &'a ProgressiveCnn,
    column: CnnColumn,
    unit_vars: Vec<(String, Var)>,
    fresh_vars: Vec<(String, Var)>,
    maps: Tensor,
    labels: Vec<u32>,
}

impl<'a> CnnColumnObjective<'a> {
    /// A new column for `task` after `net`'s columns, on the shared units' `maps` of its
    /// training images with `labels` (indices into `label_names`): a copy of the base with its
    /// top units trainable, adapters with `V` uniform in ±1/√width and `U = 0`, and a head as
    /// PyTorch's `nn.Linear` starts, drawn from `seed`.
    pub fn new(
        net: &'a ProgressiveCnn,
        task: &str,
        label_names: &[String],
        maps: &Tensor,
        labels: &[usize],
        cfg: &CnnColumnsConfig,
        seed: u64,
    ) -> Result<Self> {
        if net.task_index(task).is_ok() {
            return Err(GraftError::Input(format!("task `{task}` has a column already: task names must be unique")));
        }
        check_labels(labels, maps.dim(0)?, label_names.len())?;
        let k = net.columns.len();
        let mut model = net.base.clone();
        let unit_vars =
            model.unfreeze_top(net.top_units)?.into_iter().map(|(n, v)| (format!("columns.{k}.unit.{n}"), v)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut fresh_vars = Vec::new();
        let width = |level| net.level_width(level);
        let shape = Shape { k, levels: net.top_units + 1, width: &width, n_labels: label_names.len() };
        let on = (net.base.dtype(), &net.base.device());
        let top = LateralHead::fresh(&shape, cfg.lateral_rank, on, &mut rng, &mut fresh_vars)?;
        let column = CnnColumn { task: task.to_string(), labels: label_names.to_vec(), model, top };
        Ok(Self {
            net,
            column,
            unit_vars,
            fresh_vars,
            maps: maps.detach(),
            labels: labels.iter().map(|&l| l as u32).collect(),
        })
    }

    /// The column as trained so far, frozen: plain tensors, detached from training.
    pub fn column(&self) -> Result<CnnColumn> {
        let c = &self.column;
        Ok(CnnColumn {
            task: c.task.clone(),
            labels: c.labels.clone(),
            model: c.model.detached()?,
            top: c.top.detached(),
        })
    }

    /// Trainable parameters of the column (copied units, adapters, head).
    pub fn trainable_params(&self) -> usize {
        self.unit_vars.iter().chain(&self.fresh_vars).map(|(_, v)| v.as_tensor().elem_count()).sum()
    }
}

impl Objective for CnnColumnObjective<'_> {
    type Batch = Vec<usize>;

    /// `units` (the copied units, at [`BLOCK_LR_RATIO`] of the rate, no weight decay) and `head`
    /// (adapters and head). Nothing of the earlier columns or the shared base.
    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![
            ParamGroup {
                lr_scale: BLOCK_LR_RATIO,
                weight_decay: Some(0.0),
                ..ParamGroup::new("units", self.unit_vars.clone())
            },
            ParamGroup::new("head", self.fresh_vars.clone()),
        ]
    }

    fn loss(&self, rows: &Vec<usize>, _micro_step: u64) -> Result<ObjectiveLoss> {
        let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), self.maps.device())?;
        let x = self.maps.index_select(&idx, 0)?;
        let logits = self.net.forward(&self.net.columns, Some(&self.column), &x)?;
        let y: Vec<u32> = rows.iter().map(|&i| self.labels[i]).collect();
        crate::objectives::classification::labelled_loss(&logits, y, None)
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}

/// Learns `task` as a new column of `net` on the shared units' `maps` of its training images
/// with `labels` (indices into `label_names`): a [`CnnColumnObjective`] (seed `cfg.seed + k`
/// for column `k`) trained on the trainer for `cfg.epochs` epochs of shuffled batches, then
/// appended frozen. Earlier columns and the base are not touched. Returns one [`LossPoint`] per
/// epoch.
pub fn fit_cnn_column(
    net: &mut ProgressiveCnn,
    task: &str,
    label_names: &[String],
    maps: &Tensor,
    labels: &[usize],
    cfg: &CnnColumnsConfig,
    out: RunOutput,
) -> Result<Vec<LossPoint>> {
    cfg.validate()?;
    if cfg.top_units != net.top_units {
        return Err(GraftError::Input(format!(
            "cnn_columns.top_units {} differs from the network's {}: every column copies the same units",
            cfg.top_units, net.top_units
        )));
    }
    let k = net.columns.len();
    let (column, losses) = {
        let objective =
            CnnColumnObjective::new(net, task, label_names, maps, labels, cfg, cfg.seed.wrapping_add(k as u64))?;
        let settings = serde_json::json!({
            "cnn_columns": cfg, "task": task, "column": k,
            "earlier": net.columns.iter().map(|c| c.task.clone()).collect::<Vec<_>>(), "examples": labels.len(),
        });
        let losses = fit_epochs(&objective, labels.len(), &cfg.head_config(), &settings, out)?;
        (objective.column()?, losses)
    };
    net.columns.push(column);
    Ok(losses)
}
