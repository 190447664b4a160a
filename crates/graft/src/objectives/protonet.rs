//! Prototypical networks (Snell et al. 2017) as an objective: one micro-batch is one episode.
//! Support and query embeddings go through the trainable [`Projection`]; each way's prototype
//! is the mean of its projected support examples; a query's logits are the negative squared
//! Euclidean distances to the prototypes, and the loss is the summed cross-entropy of the
//! queries (softmax over negative distances), one unit per query, with the number classified
//! right as `accuracy`.

use crate::meta::{Episode, Projection};
use crate::train::loss::nll_sum;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{Tensor, D};

/// Prototypes `[n_way, d]`: the mean of the rows of `support [n, d]` of each way, `labels[i]`
/// being row `i`'s way. Differentiable. Errors: a label count that differs from the rows, a
/// label `≥ n_way`, a way without support rows.
pub fn prototypes(support: &Tensor, labels: &[usize], n_way: usize) -> Result<Tensor> {
    let n = support.dim(0)?;
    if labels.len() != n {
        return Err(GraftError::Input(format!("{} labels for {n} support rows", labels.len())));
    }
    let mut counts = vec![0usize; n_way];
    for &l in labels {
        *counts.get_mut(l).ok_or_else(|| GraftError::Input(format!("label {l} is not below n_way = {n_way}")))? += 1;
    }
    if let Some(w) = counts.iter().position(|&c| c == 0) {
        return Err(GraftError::Input(format!("way {w} has no support example")));
    }
    let mut avg = vec![0f64; n_way * n];
    for (i, &l) in labels.iter().enumerate() {
        avg[l * n + i] = 1.0 / counts[l] as f64;
    }
    let avg = Tensor::from_vec(avg, (n_way, n), support.device())?.to_dtype(support.dtype())?;
    Ok(avg.matmul(support)?)
}

/// Negative squared Euclidean distances `[n_q, n_way]` of `query [n_q, d]` to `protos [n_way, d]`:
/// `−(‖q‖² − 2 q·p + ‖p‖²)`. Differentiable.
pub fn neg_sq_distances(query: &Tensor, protos: &Tensor) -> Result<Tensor> {
    let qq = query.sqr()?.sum_keepdim(D::Minus1)?;
    let pp = protos.sqr()?.sum_keepdim(D::Minus1)?.t()?;
    let cross = query.matmul(&protos.t()?)?;
    Ok(((cross * 2.0)?.broadcast_sub(&qq)?.broadcast_sub(&pp))?)
}

/// Summed ProtoNet cross-entropy of an episode's projected `support` and `query` rows, and the
/// number of queries whose nearest prototype is their own way.
pub fn protonet_loss(
    support: &Tensor,
    support_labels: &[usize],
    query: &Tensor,
    query_labels: &[usize],
    n_way: usize,
) -> Result<(Tensor, usize)> {
    let logits = neg_sq_distances(query, &prototypes(support, support_labels, n_way)?)?;
    let correct = count_correct(&logits, query_labels)?;
    let targets: Vec<u32> = query_labels.iter().map(|&l| l as u32).collect();
    let (sum, _) = nll_sum(&logits, &Tensor::from_vec(targets, query_labels.len(), logits.device())?)?;
    Ok((sum, correct))
}

/// Rows of `logits [n, c]` whose largest entry is at their label.
pub fn count_correct(logits: &Tensor, labels: &[usize]) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(pred.iter().zip(labels).filter(|&(&p, &l)| p as usize == l).count())
}

/// The ProtoNet objective over frozen `features [n, d]` (row = dataset example) and a
/// projection trained on it; a batch is an [`Episode`].
pub struct ProtoNet<'a> {
    features: &'a Tensor,
    projection: &'a Projection,
}

impl<'a> ProtoNet<'a> {
    /// The objective over `features` (an episode's way count is its own).
    pub fn new(features: &'a Tensor, projection: &'a Projection) -> Self {
        Self { features, projection }
    }

    /// The projected rows `rows` of the features (differentiable).
    fn rows(&self, rows: &[usize]) -> Result<Tensor> {
        let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), self.features.device())?;
        self.projection.forward(&self.features.index_select(&idx, 0)?)
    }
}

impl Objective for ProtoNet<'_> {
    type Batch = Episode;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("projection", self.projection.vars().to_vec())]
    }

    fn loss(&self, ep: &Episode, _micro_step: u64) -> Result<ObjectiveLoss> {
        let (support, query) = (self.rows(&ep.support)?, self.rows(&ep.query)?);
        let (sum, correct) = protonet_loss(&support, &ep.support_labels, &query, &ep.query_labels, ep.ways.len())?;
        Ok(ObjectiveLoss {
            loss: LossSum { sum, count: ep.query.len(), sink: None },
            metrics: vec![("accuracy", correct as f64)],
        })
    }

    fn batch_size(&self, ep: &Episode) -> usize {
        ep.support.len() + ep.query.len()
    }
}
