//! The classification objective: summed cross-entropy of a head (linear or MLP, behind a fixed
//! standardisation) on pooled features, one unit per example, with the number classified right
//! as its metric (`accuracy` per step). Where the features come from is a [`PooledFeatures`]:
//! a fixed matrix (probes), a decoder's top blocks or a sentence encoder's top layers — those
//! bring their own parameter group, trained beside the head's.

use crate::features::head::{argmax_rows, forward, init_params, layers_of, HeadKind, Standardizer, TrainedHead};
use crate::ops::GradSink;
use crate::train::loss::nll_sum;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::Result;
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// The pooled features a head reads, per example.
pub trait PooledFeatures {
    /// Features `[rows.len(), dim]` of the examples `rows`, with a graph back to the backbone's
    /// trainable variables when it has any.
    fn pooled(&self, rows: &[usize]) -> Result<Tensor>;

    /// The backbone's variables trained with the head (none for fixed features).
    fn param_group(&self) -> Option<ParamGroup> {
        None
    }

    /// The backbone's running statistics updated by training passes (a network trained from
    /// scratch); see `Objective::buffers`.
    fn buffers(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// Where gradient-checkpointed blocks of the backbone leave their gradients.
    fn grad_sink(&self) -> Option<Arc<GradSink>> {
        None
    }
}

/// Features computed once, `[n, dim]` (a frozen backbone's).
pub struct FixedFeatures(pub Tensor);

impl PooledFeatures for FixedFeatures {
    fn pooled(&self, rows: &[usize]) -> Result<Tensor> {
        let idx = Tensor::from_vec(rows.iter().map(|&i| i as u32).collect::<Vec<_>>(), rows.len(), self.0.device())?;
        Ok(self.0.index_select(&idx, 0)?)
    }
}

/// A head of `kind` on `features`, classifying example `i` as `labels[i]`. A batch is a list of
/// example indices.
pub struct Classification<F> {
    features: F,
    kind: HeadKind,
    standardizer: Standardizer,
    head: Vec<(String, Var)>,
    labels: Vec<u32>,
}

impl<F: PooledFeatures> Classification<F> {
    /// A fresh head (PyTorch's `nn.Linear` initialisation from `seed`) behind `standardizer`;
    /// labels must already be checked to lie below `n_classes`.
    pub fn new(
        features: F,
        standardizer: Standardizer,
        labels: &[usize],
        n_classes: usize,
        kind: HeadKind,
        seed: u64,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let head = init_params(kind, standardizer.dim(), n_classes, &mut rng, standardizer.device())?;
        let labels = labels.iter().map(|&l| l as u32).collect();
        Ok(Self { features, kind, standardizer, head, labels })
    }

    /// Number of examples.
    pub fn n_examples(&self) -> usize {
        self.labels.len()
    }

    /// The head as it stands (standardisation and layers, detached from training).
    pub fn trained_head(&self) -> Result<TrainedHead> {
        TrainedHead::from_parts(self.kind, self.standardizer.clone(), layers_of(&self.head, true))
    }
}

impl<F: PooledFeatures> Objective for Classification<F> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        let mut groups = vec![ParamGroup::new("head", self.head.clone())];
        groups.extend(self.features.param_group());
        groups
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.features.buffers()
    }

    fn loss(&self, rows: &Vec<usize>, _micro_step: u64) -> Result<ObjectiveLoss> {
        self.loss_on(&self.inputs(rows)?, rows)
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}

impl<F: PooledFeatures> Classification<F> {
    /// The head's inputs for examples `rows`: their pooled features, standardised.
    pub fn inputs(&self, rows: &[usize]) -> Result<Tensor> {
        self.standardizer.apply(&self.features.pooled(rows)?)
    }

    /// The summed cross-entropy of the head on inputs `x` (from [`Self::inputs`]) of examples
    /// `rows`, with the number classified right as `accuracy`.
    pub(crate) fn loss_on(&self, x: &Tensor, rows: &[usize]) -> Result<ObjectiveLoss> {
        let logits = forward(&layers_of(&self.head, false), x)?;
        let y: Vec<u32> = rows.iter().map(|&i| self.labels[i]).collect();
        labelled_loss(&logits, y, self.features.grad_sink())
    }
}

/// The summed cross-entropy of `logits` `[n, classes]` against the labels `y`, one unit per
/// example, with the number classified right as `accuracy`: the loss of every classification
/// objective (heads, progressive columns). `sink` is where checkpointed parts leave gradients.
pub(crate) fn labelled_loss(logits: &Tensor, y: Vec<u32>, sink: Option<Arc<GradSink>>) -> Result<ObjectiveLoss> {
    let correct = argmax_rows(logits)?.iter().zip(&y).filter(|&(&p, &l)| p == l as usize).count();
    let n = y.len();
    let (sum, count) = nll_sum(logits, &Tensor::from_vec(y, n, logits.device())?)?;
    Ok(ObjectiveLoss { loss: LossSum { sum, count, sink }, metrics: vec![("accuracy", correct as f64)] })
}
