//! Training one column of a progressive network on the one [`Trainer`](crate::train::Trainer):
//! [`ColumnObjective`] is the classification objective of the new column, whose parameter groups
//! hold the new column's layers and adapters only. The earlier columns run once, on the task's
//! training features, before training starts; their activations are constants of the loss.

use super::{column_forward, column_layout, Column, ColumnParams, ProgressiveNet};
use crate::features::head::{check_labels, fit_epochs, uniform_init, HeadConfig, HeadKind, RunOutput};
use crate::features::Standardizer;
use crate::report::LossPoint;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Upper end of the uniform draw of each lateral scale `α` (from 0): a small random value, as
/// the paper initialises it, so a new column starts close to an independent head.
pub const ALPHA_INIT_MAX: f32 = 0.1;

/// How a progressive network's columns are shaped and trained (every column alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressiveConfig {
    /// Hidden layer widths of every column (one or more, each at least 1); `[64]` is the shape
    /// of an MLP head with 64 hidden units.
    pub hidden: Vec<usize>,
    /// Passes over each task's training set.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay (not applied to the lateral scales `α`).
    pub weight_decay: f64,
    /// Seed of the shuffling; column `k`'s initial weights are drawn from `seed + k`.
    pub seed: u64,
}

impl Default for ProgressiveConfig {
    /// One hidden layer of 64, 30 epochs of batches of 32, AdamW at 1e-2 with weight decay
    /// 1e-2, seed 0.
    fn default() -> Self {
        Self { hidden: vec![64], epochs: 30, batch_size: 32, lr: 1e-2, weight_decay: 1e-2, seed: 0 }
    }
}

impl ProgressiveConfig {
    /// Refuses settings that cannot train, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(GraftError::Input(format!(
                "head: hidden must list one or more widths of at least 1, got {:?}",
                self.hidden
            )));
        }
        self.head_config().validate()
    }

    /// The same training settings for a plain head: an MLP of the first hidden width. The
    /// first column of a network trains exactly as [`train_head`](crate::features::train_head)
    /// with these settings.
    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            kind: HeadKind::Mlp { hidden: self.hidden.first().copied().unwrap_or(0) },
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            ..HeadConfig::default()
        }
    }
}

/// The objective of a new column `k`: summed cross-entropy of its logits on task `k`'s
/// examples, one unit per example, `accuracy` as its metric. A batch is a list of example
/// indices.
pub struct ColumnObjective {
    k: usize,
    n_layers: usize,
    task: String,
    label_names: Vec<String>,
    standardizer: Standardizer,
    /// Standardised training features `[n, dim]`.
    x: Tensor,
    /// The earlier columns' hidden activations on every training example (constants).
    earlier: Vec<Vec<Tensor>>,
    /// The column's variables in `column_layout` order.
    vars: Vec<(String, Var)>,
    labels: Vec<u32>,
}

impl ColumnObjective {
    /// A fresh column for `task` after `net`'s columns, on `features [n, dim]` with `labels`
    /// (indices into `label_names`). Layers and adapter projections start as PyTorch's
    /// `nn.Linear` would (uniform in ±1/√fan_in), each `α` uniform in [0, [`ALPHA_INIT_MAX`]),
    /// drawn from `seed`.
    pub fn new(
        net: &ProgressiveNet,
        task: &str,
        label_names: &[String],
        features: &Tensor,
        labels: &[usize],
        seed: u64,
    ) -> Result<Self> {
        if net.task_index(task).is_ok() {
            return Err(GraftError::Input(format!("task `{task}` has a column already: task names must be unique")));
        }
        let feats = net.checked(features)?.detach();
        check_labels(labels, feats.dims2()?.0, label_names.len())?;
        let k = net.columns().len();
        let standardizer = Standardizer::fit(&feats)?;
        let x = standardizer.apply(&feats)?.detach();
        let earlier = net.hidden_states(&feats, k)?;
        let earlier = earlier.into_iter().map(|hs| hs.into_iter().map(|h| h.detach()).collect()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::new();
        let mut fan_in = 0;
        for (name, shape) in column_layout(k, net.dim(), net.hidden(), label_names.len()) {
            let t = if name.ends_with(".alpha") {
                let v: Vec<f32> = (0..shape[0]).map(|_| rng.random_range(0.0..ALPHA_INIT_MAX)).collect();
                Tensor::from_vec(v, shape[0], x.device())?
            } else {
                // A bias shares its weight's fan-in; weights and projections are [out, in].
                if shape.len() == 2 {
                    fan_in = shape[1];
                }
                uniform_init(&shape, fan_in, &mut rng, x.device())?
            };
            vars.push((name, Var::from_tensor(&t)?));
        }
        Ok(Self {
            k,
            n_layers: net.hidden().len() + 1,
            task: task.to_string(),
            label_names: label_names.to_vec(),
            standardizer,
            x,
            earlier,
            vars,
            labels: labels.iter().map(|&l| l as u32).collect(),
        })
    }

    /// Number of training examples.
    pub fn n_examples(&self) -> usize {
        self.labels.len()
    }

    /// The column as it stands, detached from training.
    pub fn column(&self) -> Column {
        let params = self.params(true);
        Column::new(self.task.clone(), self.label_names.clone(), self.standardizer.clone(), params)
    }

    fn params(&self, detach: bool) -> ColumnParams {
        let tensors = self
            .vars
            .iter()
            .map(|(_, v)| if detach { v.as_tensor().detach() } else { v.as_tensor().clone() })
            .collect();
        ColumnParams::from_ordered(tensors, self.n_layers)
    }
}

impl Objective for ColumnObjective {
    type Batch = Vec<usize>;

    /// `column` (layers, `V`, `U`) and, after the first column, `alpha` (the lateral scales,
    /// without weight decay). Nothing of the earlier columns.
    fn param_groups(&self) -> Vec<ParamGroup> {
        let (alpha, rest): (Vec<_>, Vec<_>) = self.vars.iter().cloned().partition(|(n, _)| n.ends_with(".alpha"));
        let mut groups = vec![ParamGroup::new("column", rest)];
        if self.k > 0 {
            groups.push(ParamGroup { weight_decay: Some(0.0), ..ParamGroup::new("alpha", alpha) });
        }
        groups
    }

    fn loss(&self, rows: &Vec<usize>, _micro_step: u64) -> Result<ObjectiveLoss> {
        let idx = Tensor::from_vec(rows.iter().map(|&i| i as u32).collect::<Vec<_>>(), rows.len(), self.x.device())?;
        let earlier = self
            .earlier
            .iter()
            .map(|hs| hs.iter().map(|h| Ok(h.index_select(&idx, 0)?)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let (_, logits) = column_forward(&self.params(false), &self.x.index_select(&idx, 0)?, &earlier)?;
        let y: Vec<u32> = rows.iter().map(|&i| self.labels[i]).collect();
        crate::objectives::classification::labelled_loss(&logits, y, None)
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}

/// Learns `task` as a new column of `net`: a [`ColumnObjective`] (seed `cfg.seed + k` for column
/// `k`) trained on the trainer for `cfg.epochs` epochs of shuffled batches, then appended to
/// `net`. The earlier columns are not touched. `out` gives the run directory (checkpoints,
/// `metrics.jsonl`, resume) and progress. Returns one [`LossPoint`] per epoch.
pub fn fit_column(
    net: &mut ProgressiveNet,
    task: &str,
    label_names: &[String],
    features: &Tensor,
    labels: &[usize],
    cfg: &ProgressiveConfig,
    out: RunOutput,
) -> Result<Vec<LossPoint>> {
    cfg.validate()?;
    if cfg.hidden != net.hidden() {
        return Err(GraftError::Input(format!(
            "head: hidden {:?} differs from the network's {:?}: every column has the same widths",
            cfg.hidden,
            net.hidden()
        )));
    }
    let k = net.columns().len();
    let objective = ColumnObjective::new(net, task, label_names, features, labels, cfg.seed.wrapping_add(k as u64))?;
    let n = objective.n_examples();
    let settings = serde_json::json!({
        "progressive": cfg, "task": task, "column": k, "earlier": net.tasks(), "examples": n,
    });
    let losses = fit_epochs(&objective, n, &cfg.head_config(), &settings, out)?;
    net.push(objective.column())?;
    Ok(losses)
}
