//! Progressive networks (Rusu et al. 2016, "Progressive Neural Networks") of MLP heads on frozen
//! features: one column per task, learned in sequence. Column `k` is an MLP of the head's shape
//! (its own standardisation of the features, hidden layers, an output layer for task `k`'s
//! labels); every layer after the first also reads the earlier columns' activations below it
//! through a lateral adapter:
//!
//! `h_i^(k) = σ(W_i^(k) h_{i−1}^(k) + U_i^(k) relu(V_i^(k) [α_{i,0}^(k) h_{i−1}^(0); …; α_{i,k−1}^(k) h_{i−1}^(k−1)]) + b_i^(k))`
//!
//! (σ = ReLU in hidden layers, none in the output layer; the paper's adapter, its eq. 2, without
//! biases: one learned scale α per earlier column, `V` projecting the scaled, concatenated
//! activations to one column's width, a ReLU, `U`). Training task `k` trains column `k` and its
//! adapters only ([`train`]); the earlier columns are plain tensors, never variables, so task
//! `j`'s logits, which read columns `0..=j` only, are the same bit for bit after any later task
//! is learned.

pub mod cnn;
pub mod encoder;
mod lateral;
pub mod train;

pub use cnn::{fit_cnn_column, CnnColumnObjective, CnnColumnsConfig, ProgressiveCnn};
pub use encoder::{fit_encoder_column, EncoderColumnObjective, EncoderColumnsConfig, ProgressiveEncoder};
pub use train::{fit_column, ColumnObjective, ProgressiveConfig};

use crate::features::head::{HeadKind, Standardizer, TrainedHead};
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The `__metadata__` key of a saved network's description ([`NetDescription`], JSON).
pub const METADATA_KEY: &str = "graft.progressive";

/// The format tag of [`NetDescription::format`].
pub const FORMAT: &str = "graft-progressive/1";

/// What a saved network is: the feature width, the hidden widths every column shares, and each
/// column's task and labels, in the order the tasks were learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDescription {
    /// Always [`FORMAT`].
    pub format: String,
    /// Feature width the network reads.
    pub dim: usize,
    /// Hidden layer widths of every column.
    pub hidden: Vec<usize>,
    /// The columns, first learned first.
    pub columns: Vec<ColumnDescription>,
}

/// One column of a [`NetDescription`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDescription {
    /// The task's name.
    pub task: String,
    /// The task's labels; class `i` of the column's logits is `labels[i]`.
    pub labels: Vec<String>,
}

/// The lateral adapter into one layer from the earlier columns' activations below it:
/// `U relu(V [α_0 h^(0); …; α_{k−1} h^(k−1)])`.
#[derive(Debug, Clone)]
pub(crate) struct Lateral {
    /// `[k]`: one learned scale per earlier column.
    pub(crate) alpha: Tensor,
    /// `[a, k·a]`: the scaled, concatenated activations (width `a` each) to width `a`.
    pub(crate) v: Tensor,
    /// `[out, a]`: into the layer's pre-activation.
    pub(crate) u: Tensor,
}

impl Lateral {
    /// The adapter's output for the earlier columns' activations at `depth` (`earlier[j][depth]`).
    fn apply(&self, earlier: &[Vec<Tensor>], depth: usize) -> Result<Tensor> {
        let mut scaled = Vec::with_capacity(earlier.len());
        for (j, h) in earlier.iter().enumerate() {
            let h = h.get(depth).ok_or_else(|| GraftError::Input(format!("column {j} has no hidden layer {depth}")))?;
            scaled.push(h.broadcast_mul(&self.alpha.narrow(0, j, 1)?)?);
        }
        let cat = Tensor::cat(&scaled, 1)?;
        Ok(cat.matmul(&self.v.t()?)?.relu()?.matmul(&self.u.t()?)?)
    }
}

/// One column's trained tensors.
#[derive(Debug, Clone)]
pub(crate) struct ColumnParams {
    /// `(weight [out, in], bias [out])` per layer: the hidden layers, then the output layer.
    pub(crate) layers: Vec<(Tensor, Tensor)>,
    /// The adapter into layer `i + 1`, for every layer after the first; empty in column 0.
    pub(crate) laterals: Vec<Lateral>,
}

impl ColumnParams {
    /// Builds the parameters from tensors in [`column_layout`]'s order.
    pub(crate) fn from_ordered(tensors: Vec<Tensor>, n_layers: usize) -> Self {
        let (layers, laterals) = tensors.split_at(2 * n_layers.min(tensors.len() / 2));
        Self {
            layers: layers.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
            laterals: laterals
                .chunks(3)
                .filter(|p| p.len() == 3)
                .map(|p| Lateral { alpha: p[0].clone(), v: p[1].clone(), u: p[2].clone() })
                .collect(),
        }
    }

    /// The tensors in [`column_layout`]'s order.
    fn ordered(&self) -> Vec<&Tensor> {
        let layers = self.layers.iter().flat_map(|(w, b)| [w, b]);
        layers.chain(self.laterals.iter().flat_map(|l| [&l.alpha, &l.v, &l.u])).collect()
    }
}

/// `(name, shape)` of every trained tensor of column `k` (with `n_labels` outputs) in a network
/// of `dim` inputs and `hidden` widths, in a fixed order: each layer's weight and bias, then
/// each lateral adapter's `alpha`, `v`, `u` (column 0 has none). The names are those of the
/// saved file and of the training variables.
pub(crate) fn column_layout(k: usize, dim: usize, hidden: &[usize], n_labels: usize) -> Vec<(String, Vec<usize>)> {
    let n_layers = hidden.len() + 1;
    let width_in = |i: usize| if i == 0 { dim } else { hidden[i - 1] };
    let width_out = |i: usize| if i + 1 < n_layers { hidden[i] } else { n_labels };
    let mut out = Vec::new();
    for i in 0..n_layers {
        out.push((format!("columns.{k}.layers.{i}.weight"), vec![width_out(i), width_in(i)]));
        out.push((format!("columns.{k}.layers.{i}.bias"), vec![width_out(i)]));
    }
    if k > 0 {
        for i in 1..n_layers {
            let a = width_in(i);
            out.push((format!("columns.{k}.laterals.{i}.alpha"), vec![k]));
            out.push((format!("columns.{k}.laterals.{i}.v"), vec![a, k.saturating_mul(a)]));
            out.push((format!("columns.{k}.laterals.{i}.u"), vec![width_out(i), a]));
        }
    }
    out
}

/// Column `params`' hidden activations and logits for its standardised input `x`, where
/// `earlier[j]` holds column `j`'s hidden activations on the same examples.
pub(crate) fn column_forward(
    params: &ColumnParams,
    x: &Tensor,
    earlier: &[Vec<Tensor>],
) -> Result<(Vec<Tensor>, Tensor)> {
    let last = params.layers.len().saturating_sub(1);
    let mut h = x.clone();
    let mut hidden = Vec::with_capacity(last);
    for (i, (w, b)) in params.layers.iter().enumerate() {
        let mut z = h.matmul(&w.t()?)?;
        if let Some(lateral) = i.checked_sub(1).and_then(|d| params.laterals.get(d)) {
            z = (z + lateral.apply(earlier, i - 1)?)?;
        }
        z = z.broadcast_add(b)?;
        if i == last {
            return Ok((hidden, z));
        }
        h = z.relu()?;
        hidden.push(h.clone());
    }
    Err(GraftError::Input("a column has no layers".into()))
}

/// One task's column: its standardisation of the features, layers and lateral adapters.
#[derive(Debug, Clone)]
pub struct Column {
    task: String,
    labels: Vec<String>,
    standardizer: Standardizer,
    params: ColumnParams,
}

impl Column {
    pub(crate) fn new(task: String, labels: Vec<String>, standardizer: Standardizer, params: ColumnParams) -> Self {
        Self { task, labels, standardizer, params }
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The task's labels, in the order of the column's logits.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Weights, biases and adapter tensors of the column (the standardisation is fitted, not
    /// trained).
    pub fn trainable_params(&self) -> usize {
        self.params.ordered().iter().map(|t| t.elem_count()).sum()
    }

    /// The column's own path as a plain head, its lateral adapters left out: what the column
    /// computes when every earlier column's contribution is 0. Only for one hidden layer (the
    /// shape of [`HeadKind::Mlp`]).
    pub fn own_head(&self) -> Result<TrainedHead> {
        let [(w, _), _] = self.params.layers.as_slice() else {
            return Err(GraftError::Input(format!(
                "column `{}` has {} layers; a plain MLP head has 2",
                self.task,
                self.params.layers.len()
            )));
        };
        let kind = HeadKind::Mlp { hidden: w.dims()[0] };
        TrainedHead::from_parts(kind, self.standardizer.clone(), self.params.layers.clone())
    }
}

/// A progressive network: columns learned one task after another over the same features.
#[derive(Debug, Clone)]
pub struct ProgressiveNet {
    dim: usize,
    hidden: Vec<usize>,
    columns: Vec<Column>,
}

impl ProgressiveNet {
    /// An empty network over features of width `dim` whose columns have hidden layers of
    /// widths `hidden` (at least one, each at least 1).
    pub fn new(dim: usize, hidden: Vec<usize>) -> Result<Self> {
        if dim == 0 {
            return Err(GraftError::Input("progressive network: the features have no columns".into()));
        }
        if hidden.is_empty() || hidden.contains(&0) {
            return Err(GraftError::Input(format!(
                "progressive network: hidden must list one or more widths of at least 1, got {hidden:?}"
            )));
        }
        Ok(Self { dim, hidden, columns: Vec::new() })
    }

    /// Assembles a network from columns (first learned first), checking that every column's
    /// tensors have the shapes its place in the network needs.
    pub fn from_columns(dim: usize, hidden: Vec<usize>, columns: Vec<Column>) -> Result<Self> {
        let mut net = Self::new(dim, hidden)?;
        for column in columns {
            net.push(column)?;
        }
        Ok(net)
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Hidden widths of every column.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// The columns, first learned first.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The tasks, in the order they were learned.
    pub fn tasks(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.task.as_str()).collect()
    }

    /// The index of `task`'s column; an unknown task is an input error listing the tasks.
    pub fn task_index(&self, task: &str) -> Result<usize> {
        self.columns.iter().position(|c| c.task == task).ok_or_else(|| {
            GraftError::Input(format!(
                "unknown task `{task}`: the network's tasks are {}",
                if self.columns.is_empty() { "none".to_string() } else { self.tasks().join(", ") }
            ))
        })
    }

    /// `task`'s class scores `[n, labels]` (f32) of features `feats [n, dim]`. They depend on
    /// the columns up to `task`'s only.
    pub fn logits(&self, task: &str, feats: &Tensor) -> Result<Tensor> {
        let k = self.task_index(task)?;
        let feats = self.checked(feats)?;
        let earlier = self.hidden_states(&feats, k)?;
        let c = &self.columns[k];
        Ok(column_forward(&c.params, &c.standardizer.apply(&feats)?, &earlier)?.1)
    }

    /// The most likely label index of each row of `feats [n, dim]` for `task`.
    pub fn predict(&self, task: &str, feats: &Tensor) -> Result<Vec<usize>> {
        crate::features::head::argmax_rows(&self.logits(task, feats)?)
    }

    /// The same network with every lateral adapter's `U` set to 0: each column computes its
    /// own path alone (an ablation of the lateral connections).
    pub fn without_laterals(&self) -> Result<Self> {
        let mut net = self.clone();
        for c in &mut net.columns {
            for l in &mut c.params.laterals {
                l.u = l.u.zeros_like()?;
            }
        }
        Ok(net)
    }

    /// Weights, biases and adapter tensors of every column.
    pub fn trainable_params(&self) -> usize {
        self.columns.iter().map(Column::trainable_params).sum()
    }

    /// The description saved with the weights.
    pub fn description(&self) -> NetDescription {
        NetDescription {
            format: FORMAT.into(),
            dim: self.dim,
            hidden: self.hidden.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| ColumnDescription { task: c.task.clone(), labels: c.labels.clone() })
                .collect(),
        }
    }

    /// Hidden activations of the first `upto` columns on `feats` (already checked).
    pub(crate) fn hidden_states(&self, feats: &Tensor, upto: usize) -> Result<Vec<Vec<Tensor>>> {
        let mut states = Vec::with_capacity(upto);
        for c in &self.columns[..upto.min(self.columns.len())] {
            let (h, _) = column_forward(&c.params, &c.standardizer.apply(feats)?, &states)?;
            states.push(h);
        }
        Ok(states)
    }

    /// `feats [n, dim]` as f32 on the network's device, or an input error naming the widths.
    pub(crate) fn checked(&self, feats: &Tensor) -> Result<Tensor> {
        let (_, d) = feats.dims2()?;
        if d != self.dim {
            return Err(GraftError::Input(format!(
                "features have {d} columns but the progressive network reads {}: use the same backbone",
                self.dim
            )));
        }
        let device = self.columns.first().map_or(feats.device(), |c| c.standardizer.device());
        Ok(feats.to_device(device)?.to_dtype(DType::F32)?)
    }

    /// Adds a column after the others, checking its shapes and that its task is new.
    pub(crate) fn push(&mut self, column: Column) -> Result<()> {
        self.check_column(&column, self.columns.len()).map_err(GraftError::Input)?;
        self.columns.push(column);
        Ok(())
    }

    fn check_column(&self, c: &Column, k: usize) -> std::result::Result<(), String> {
        let task = &c.task;
        if task.is_empty() {
            return Err(format!("column {k} has an empty task name"));
        }
        if self.columns[..k.min(self.columns.len())].iter().any(|o| &o.task == task) {
            return Err(format!("task `{task}` has a column already: task names must be unique"));
        }
        if c.labels.len() < 2 {
            return Err(format!("task `{task}` has {} labels; a classifier needs at least 2", c.labels.len()));
        }
        let (mean, std) = (c.standardizer.mean.dims(), c.standardizer.std.dims());
        if mean != [self.dim] || std != [self.dim] {
            return Err(format!(
                "task `{task}`: standardisation {mean:?} / {std:?} does not fit {} features",
                self.dim
            ));
        }
        let layout = column_layout(k, self.dim, &self.hidden, c.labels.len());
        let have = c.params.ordered();
        if have.len() != layout.len() {
            return Err(format!("task `{task}`: column {k} has {} tensors, {} expected", have.len(), layout.len()));
        }
        for ((name, shape), t) in layout.iter().zip(have) {
            if t.dims() != shape.as_slice() {
                return Err(format!(
                    "task `{task}` ({} labels): `{name}` is {:?}, {shape:?} expected",
                    c.labels.len(),
                    t.dims()
                ));
            }
        }
        Ok(())
    }

    /// Writes the network as one safetensors file: `columns.{k}.standardize.{mean,std}`, the
    /// tensors of `column_layout` and the [`NetDescription`] as JSON under the header's
    /// `__metadata__` key [`METADATA_KEY`]. The file is written beside `path` and renamed into
    /// place, so weights and description are replaced together.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: Vec<(String, Tensor)> = Vec::new();
        for (k, c) in self.columns.iter().enumerate() {
            map.push((format!("columns.{k}.standardize.mean"), c.standardizer.mean.clone()));
            map.push((format!("columns.{k}.standardize.std"), c.standardizer.std.clone()));
            let layout = column_layout(k, self.dim, &self.hidden, c.labels.len());
            map.extend(layout.into_iter().map(|(n, _)| n).zip(c.params.ordered().into_iter().cloned()));
        }
        let meta = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(&self.description())?)]);
        crate::io::safetensors::save_atomic_with_metadata(map, meta, path)
    }

    /// Reads a network written by [`ProgressiveNet::save`] onto `device`. A missing or
    /// malformed description, a missing tensor or one whose shape does not fit the description
    /// (a task's label count against its output layer, say) is an error naming the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = crate::io::safetensors::open_safetensors(path)?;
        let bad = |m: String| GraftError::model(path, m);
        let text = file.user_metadata().and_then(|m| m.get(METADATA_KEY)).ok_or_else(|| {
            bad(format!("no `{METADATA_KEY}` description in the header; was it written by ProgressiveNet::save?"))
        })?;
        let desc: NetDescription =
            serde_json::from_str(text).map_err(|e| bad(format!("the `{METADATA_KEY}` description: {e}")))?;
        if desc.format != FORMAT {
            return Err(bad(format!("format `{}`, expected `{FORMAT}`", desc.format)));
        }
        let mut map = file.load_all(device)?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = map.remove(name).ok_or_else(|| bad(format!("lacks tensor `{name}`")))?;
            Ok(t.to_dtype(DType::F32)?)
        };
        let mut net = Self::new(desc.dim, desc.hidden.clone()).map_err(|e| bad(e.to_string()))?;
        for (k, cd) in desc.columns.into_iter().enumerate() {
            let standardizer = Standardizer {
                mean: take(&format!("columns.{k}.standardize.mean"))?,
                std: take(&format!("columns.{k}.standardize.std"))?,
            };
            let layout = column_layout(k, net.dim, &net.hidden, cd.labels.len());
            let tensors = layout.iter().map(|(n, _)| take(n)).collect::<Result<Vec<_>>>()?;
            let params = ColumnParams::from_ordered(tensors, net.hidden.len() + 1);
            let column = Column { task: cd.task, labels: cd.labels, standardizer, params };
            net.check_column(&column, k).map_err(bad)?;
            net.columns.push(column);
        }
        Ok(net)
    }
}
