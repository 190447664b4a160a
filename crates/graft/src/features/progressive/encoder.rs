//! Progressive networks over a sentence encoder's own blocks (Rusu et al. 2016, in the form the
//! paper gives for deep networks, on a pretrained transformer): every task gets a **column**, a
//! trainable copy of the encoder's top `top_layers` blocks and a linear head on their mean-pooled
//! output. The blocks below are shared and frozen. Column `k` also reads the earlier columns
//! through **lateral adapters**: into its block `l > 0` and into its head goes
//! `Σ_{j<k} U·gelu(V·h_j)`, `h_j` being column `j`'s output at the level below. `U` starts at
//! zero, so a new column starts as a plain copy of the pretrained blocks; earlier columns are
//! frozen, so their tasks' outputs are bit-identical after later tasks are learned.
//!
//! Training runs on the one [`Trainer`](crate::train::Trainer) through
//! [`EncoderColumnObjective`]: the column's blocks at `lr ×`
//! [`BLOCK_LR_RATIO`], its head and adapters at `lr`.

use super::super::head::{argmax_rows, check_labels, fit_epochs, HeadConfig, HeadKind, RunOutput};
use super::super::tune::BLOCK_LR_RATIO;
use crate::models::bert::{mean_pool, BertInput, BertLayer, Pass, SentenceEncoder};
use crate::report::LossPoint;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

use super::lateral::{LateralHead, Shape};
use super::ColumnDescription;

/// How encoder columns are shaped and trained (every column alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderColumnsConfig {
    /// Encoder blocks each column copies and trains (the top ones; at least 1).
    pub top_layers: usize,
    /// Inner width of each lateral adapter `U·gelu(V·h)`.
    pub lateral_rank: usize,
    /// Passes over each task's training set.
    pub epochs: usize,
    /// Texts per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate of the head and adapters; the copied blocks train at
    /// `lr ×` [`BLOCK_LR_RATIO`].
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the shuffling; column `k`'s fresh weights are drawn from `seed + k`.
    pub seed: u64,
}

impl Default for EncoderColumnsConfig {
    /// The top 2 blocks, adapters of rank 16, 3 epochs of 16 texts, AdamW at 1e-2 (blocks at
    /// 1e-4) with weight decay 1e-2, seed 0.
    fn default() -> Self {
        Self { top_layers: 2, lateral_rank: 16, epochs: 3, batch_size: 16, lr: 1e-2, weight_decay: 1e-2, seed: 0 }
    }
}

impl EncoderColumnsConfig {
    /// Refuses settings that cannot train, naming the field.
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        if self.top_layers == 0 || self.top_layers > n_layers {
            return Err(GraftError::Input(format!(
                "encoder_columns.top_layers must be between 1 and the encoder's {n_layers} blocks, got {}",
                self.top_layers
            )));
        }
        if self.lateral_rank == 0 {
            return Err(GraftError::Input("encoder_columns.lateral_rank must be at least 1".into()));
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

/// One task's column: copied blocks, lateral adapters (into each block after the first and
/// into the head, level `top_layers`) and the head.
#[derive(Debug, Clone)]
pub struct EncoderColumn {
    task: String,
    labels: Vec<String>,
    blocks: Vec<BertLayer>,
    top: LateralHead,
}

impl EncoderColumn {
    /// The task this column serves.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Its class names, in label-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Its trainable parameters: copied blocks, lateral adapters and head.
    pub fn params(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.named_weights(0, self.top.head_w.dtype()).map_or(0, |w| w.iter().map(|(_, t)| t.elem_count()).sum())
            })
            .sum();
        blocks + self.top.params()
    }
}

/// The header key of [`ProgressiveEncoder::save`]'s description.
pub const ENCODER_METADATA_KEY: &str = "graft.progressive_encoder";
/// The description's format tag.
pub const ENCODER_FORMAT: &str = "graft-progressive-encoder/1";

/// The JSON description of saved encoder columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderNetDescription {
    /// [`ENCODER_FORMAT`].
    pub format: String,
    /// The encoder's width.
    pub dim: usize,
    /// Encoder blocks each column copies.
    pub top_layers: usize,
    /// The columns in task order.
    pub columns: Vec<ColumnDescription>,
}

/// A frozen sentence encoder and the columns learned on top of it, in task order.
#[derive(Debug, Clone)]
pub struct ProgressiveEncoder {
    encoder: SentenceEncoder,
    top_layers: usize,
    columns: Vec<EncoderColumn>,
}

impl ProgressiveEncoder {
    /// An empty network over `encoder` whose columns copy its top `top_layers` blocks.
    pub fn new(encoder: SentenceEncoder, top_layers: usize) -> Result<Self> {
        let n = encoder.model().config().num_hidden_layers;
        if top_layers == 0 || top_layers > n {
            return Err(GraftError::Input(format!(
                "top_layers must be between 1 and the encoder's {n} blocks, got {top_layers}"
            )));
        }
        Ok(Self { encoder, top_layers, columns: Vec::new() })
    }

    /// The columns, in task order.
    pub fn columns(&self) -> &[EncoderColumn] {
        &self.columns
    }

    /// The shared encoder.
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }

    /// The index of `task`'s column, or an error naming the tasks there are.
    pub fn task_index(&self, task: &str) -> Result<usize> {
        self.columns.iter().position(|c| c.task == task).ok_or_else(|| {
            let known: Vec<&str> = self.columns.iter().map(|c| c.task.as_str()).collect();
            GraftError::Input(format!("unknown task `{task}`: the network's tasks are {}", known.join(", ")))
        })
    }

    /// Logits `[n, classes]` of `task`'s column for `texts`, in batches of `batch` (inference;
    /// only the columns up to `task`'s run).
    pub fn logits(&self, task: &str, texts: &[String], batch: usize) -> Result<Tensor> {
        let k = self.task_index(task)?;
        let seqs = self.tokenize(texts)?;
        let mut parts = Vec::new();
        for chunk in seqs.chunks(batch.max(1)) {
            let input = self.encoder.batch_input(chunk)?;
            parts.push(self.forward(&self.columns[..=k], None, &input, Pass::Infer)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The class index of each text for `task`.
    pub fn predict(&self, task: &str, texts: &[String], batch: usize) -> Result<Vec<usize>> {
        argmax_rows(&self.logits(task, texts, batch)?)
    }

    /// Trainable parameters of all columns (blocks, adapters, heads).
    pub fn trainable_params(&self) -> usize {
        self.columns.iter().map(EncoderColumn::params).sum()
    }

    /// Writes the columns as one safetensors file (`columns.{k}.block.{l}.<checkpoint name>`,
    /// `columns.{k}.lateral.{level}.{j}.{v,u}`, `columns.{k}.head.{weight,bias}`) with an
    /// [`EncoderNetDescription`] in the header, atomically. The shared encoder is not written:
    /// [`ProgressiveEncoder::load`] takes it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dtype = self.encoder.model().dtype();
        let mut map = Vec::new();
        for (k, c) in self.columns.iter().enumerate() {
            for (l, (block, i)) in c.blocks.iter().zip(self.first_block()..).enumerate() {
                for (name, t) in block.named_weights(i, dtype)? {
                    map.push((format!("columns.{k}.block.{l}.{name}"), t.detach()));
                }
            }
            c.top.save_into(k, &mut map);
        }
        let meta = HashMap::from([(ENCODER_METADATA_KEY.to_string(), serde_json::to_string(&self.description())?)]);
        crate::io::safetensors::save_atomic_with_metadata(map, meta, path)
    }

    /// Reads columns written by [`ProgressiveEncoder::save`] on top of `encoder` (the one they
    /// were learned on). A missing description or tensor, or one whose shape does not fit the
    /// encoder or the description, is an error naming the file.
    pub fn load(path: &Path, encoder: SentenceEncoder) -> Result<Self> {
        let file = crate::io::safetensors::open_safetensors(path)?;
        let bad = |m: String| GraftError::model(path, m);
        let text = file.user_metadata().and_then(|m| m.get(ENCODER_METADATA_KEY)).ok_or_else(|| {
            bad(format!("no `{ENCODER_METADATA_KEY}` description; was it written by ProgressiveEncoder::save?"))
        })?;
        let desc: EncoderNetDescription =
            serde_json::from_str(text).map_err(|e| bad(format!("the `{ENCODER_METADATA_KEY}` description: {e}")))?;
        if desc.format != ENCODER_FORMAT || desc.dim != encoder.dim() {
            return Err(bad(format!(
                "format `{}` of width {}, expected `{ENCODER_FORMAT}` for this encoder's width {}",
                desc.format,
                desc.dim,
                encoder.dim()
            )));
        }
        let (dtype, device) = (encoder.model().dtype(), encoder.model().device().clone());
        let mut net = Self::new(encoder, desc.top_layers).map_err(|e| bad(e.to_string()))?;
        let mut map = file.load_all(&device)?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = map.remove(name).ok_or_else(|| bad(format!("lacks tensor `{name}`")))?;
            Ok(t.to_dtype(dtype)?)
        };
        for (k, cd) in desc.columns.into_iter().enumerate() {
            let mut blocks = Vec::with_capacity(net.top_layers);
            for (l, i) in (net.first_block()..).take(net.top_layers).enumerate() {
                let base = &net.encoder.model().layers()[i];
                let block = base
                    .with_weights(i, dtype, &mut |name| take(&format!("columns.{k}.block.{l}.{name}")))
                    .map_err(|e| bad(e.to_string()))?;
                blocks.push(block);
            }
            let top = LateralHead::load(
                &Shape { k, levels: net.top_layers + 1, width: &|_| desc.dim, n_labels: cd.labels.len() },
                &mut take,
                &|m| bad(m),
            )?;
            net.columns.push(EncoderColumn { task: cd.task, labels: cd.labels, blocks, top });
        }
        Ok(net)
    }

    /// What [`ProgressiveEncoder::save`] writes into the header.
    pub fn description(&self) -> EncoderNetDescription {
        EncoderNetDescription {
            format: ENCODER_FORMAT.to_string(),
            dim: self.encoder.dim(),
            top_layers: self.top_layers,
            columns: self
                .columns
                .iter()
                .map(|c| ColumnDescription { task: c.task.clone(), labels: c.labels.clone() })
                .collect(),
        }
    }

    /// Index of the first encoder block the columns copy.
    fn first_block(&self) -> usize {
        self.encoder.model().config().num_hidden_layers - self.top_layers
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| Ok(self.encoder.tokenize(t)?.ids)).collect()
    }

    /// Logits of the last column: `frozen` columns first (inference, detached), then `training`
    /// (the column being learned, run with `pass`) when given, else the last of `frozen`.
    fn forward(
        &self,
        frozen: &[EncoderColumn],
        training: Option<&EncoderColumn>,
        input: &BertInput,
        pass: Pass,
    ) -> Result<Tensor> {
        let bert = self.encoder.model();
        let split = bert.config().num_hidden_layers - self.top_layers;
        let bottom = bert.hidden_after(input, split, Pass::Infer)?.detach();
        let bias = bert.attention_bias(input)?;
        // outputs[j][l]: column j after its block l; the last entry is the pooled output.
        let mut outputs: Vec<Vec<Tensor>> = Vec::new();
        let all: Vec<(&EncoderColumn, Pass)> =
            frozen.iter().map(|c| (c, Pass::Infer)).chain(training.map(|c| (c, pass))).collect();
        let mut logits = None;
        for (k, &(col, p)) in all.iter().enumerate() {
            let mut x = bottom.clone();
            let mut outs = Vec::with_capacity(self.top_layers + 1);
            for (l, block) in col.blocks.iter().enumerate() {
                if l > 0 {
                    x = col.top.add_laterals(x, &outputs, l, l - 1)?;
                }
                x = bert.run_layer(block, &x, &bias, p)?;
                outs.push(x.clone());
            }
            let pooled = mean_pool(&x, &input.mask)?;
            let z = col.top.add_laterals(pooled.clone(), &outputs, self.top_layers, self.top_layers)?;
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

/// The objective of a new column: summed cross-entropy of its logits on the task's texts, one
/// unit per text, `accuracy` as its metric. A batch is a list of example indices.
pub struct EncoderColumnObjective<'a> {
    net: &'a ProgressiveEncoder,
    column: EncoderColumn,
    block_vars: Vec<(String, Var)>,
    fresh_vars: Vec<(String, Var)>,
    seqs: Vec<Vec<u32>>,
    labels: Vec<u32>,
}

impl<'a> EncoderColumnObjective<'a> {
    /// A new column for `task` after `net`'s columns: copies of the encoder's top blocks,
    /// adapters with `V` uniform in ±1/√dim and `U = 0`, and a head as PyTorch's `nn.Linear`
    /// starts (uniform in ±1/√dim), drawn from `seed`.
    pub fn new(
        net: &'a ProgressiveEncoder,
        task: &str,
        label_names: &[String],
        texts: &[String],
        labels: &[usize],
        cfg: &EncoderColumnsConfig,
        seed: u64,
    ) -> Result<Self> {
        if net.task_index(task).is_ok() {
            return Err(GraftError::Input(format!("task `{task}` has a column already: task names must be unique")));
        }
        check_labels(labels, texts.len(), label_names.len())?;
        if texts.len() != labels.len() {
            return Err(GraftError::Input(format!("{} texts but {} labels", texts.len(), labels.len())));
        }
        let bert = net.encoder.model();
        let (n_layers, dim, dtype, device) =
            (bert.config().num_hidden_layers, net.encoder.dim(), bert.dtype(), bert.device().clone());
        let k = net.columns.len();
        let mut block_vars = Vec::new();
        let mut blocks = Vec::new();
        for (l, i) in (n_layers - net.top_layers..n_layers).enumerate() {
            let (block, vars) = bert.layers()[i].trainable_copy(i, dtype)?;
            block_vars.extend(vars.into_iter().map(|(n, v)| (format!("columns.{k}.block.{l}.{n}"), v)));
            blocks.push(block);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut fresh_vars = Vec::new();
        let shape = Shape { k, levels: net.top_layers + 1, width: &|_| dim, n_labels: label_names.len() };
        let top = LateralHead::fresh(&shape, cfg.lateral_rank, (dtype, &device), &mut rng, &mut fresh_vars)?;
        let column = EncoderColumn { task: task.to_string(), labels: label_names.to_vec(), blocks, top };
        Ok(Self {
            net,
            column,
            block_vars,
            fresh_vars,
            seqs: net.tokenize(texts)?,
            labels: labels.iter().map(|&l| l as u32).collect(),
        })
    }

    /// The column as trained so far, detached from training.
    pub fn column(&self) -> EncoderColumn {
        let c = &self.column;
        EncoderColumn {
            task: c.task.clone(),
            labels: c.labels.clone(),
            blocks: c.blocks.clone(),
            top: c.top.detached(),
        }
    }

    /// Trainable parameters of the column (blocks, adapters, head).
    pub fn trainable_params(&self) -> usize {
        self.block_vars.iter().chain(&self.fresh_vars).map(|(_, v)| v.as_tensor().elem_count()).sum()
    }
}

impl Objective for EncoderColumnObjective<'_> {
    type Batch = Vec<usize>;

    /// `blocks` (the copied encoder blocks, at [`BLOCK_LR_RATIO`] of the rate, no weight decay)
    /// and `head` (adapters and head). Nothing of the earlier columns or the shared encoder.
    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![
            ParamGroup {
                lr_scale: BLOCK_LR_RATIO,
                weight_decay: Some(0.0),
                ..ParamGroup::new("blocks", self.block_vars.clone())
            },
            ParamGroup::new("head", self.fresh_vars.clone()),
        ]
    }

    fn loss(&self, rows: &Vec<usize>, _micro_step: u64) -> Result<ObjectiveLoss> {
        let seqs: Vec<Vec<u32>> = rows.iter().map(|&i| self.seqs[i].clone()).collect();
        let input = self.net.encoder.batch_input(&seqs)?;
        let logits = self.net.forward(&self.net.columns, Some(&self.column), &input, Pass::Train)?;
        let y: Vec<u32> = rows.iter().map(|&i| self.labels[i]).collect();
        crate::objectives::classification::labelled_loss(&logits, y, None)
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}

/// Learns `task` as a new column of `net` on `texts` with `labels` (indices into
/// `label_names`): an [`EncoderColumnObjective`] (seed `cfg.seed + k` for column `k`) trained
/// on the trainer for `cfg.epochs` epochs of shuffled batches, then appended. Earlier columns
/// and the shared encoder are not touched. Returns one [`LossPoint`] per epoch.
pub fn fit_encoder_column(
    net: &mut ProgressiveEncoder,
    task: &str,
    label_names: &[String],
    texts: &[String],
    labels: &[usize],
    cfg: &EncoderColumnsConfig,
    out: RunOutput,
) -> Result<Vec<LossPoint>> {
    cfg.validate(net.encoder.model().config().num_hidden_layers)?;
    if cfg.top_layers != net.top_layers {
        return Err(GraftError::Input(format!(
            "encoder_columns.top_layers {} differs from the network's {}: every column has the same blocks",
            cfg.top_layers, net.top_layers
        )));
    }
    let k = net.columns.len();
    let (column, losses) = {
        let objective =
            EncoderColumnObjective::new(net, task, label_names, texts, labels, cfg, cfg.seed.wrapping_add(k as u64))?;
        let settings = serde_json::json!({
            "encoder_columns": cfg, "task": task, "column": k,
            "earlier": net.columns.iter().map(|c| c.task.clone()).collect::<Vec<_>>(), "examples": texts.len(),
        });
        let losses = fit_epochs(&objective, texts.len(), &cfg.head_config(), &settings, out)?;
        (objective.column(), losses)
    };
    net.columns.push(column);
    Ok(losses)
}
