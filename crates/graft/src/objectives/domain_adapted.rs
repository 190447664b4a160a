//! Classification on a labelled source domain with the features pulled towards an unlabelled
//! target domain: each micro-batch's summed source cross-entropy plus `weight ×` an alignment
//! loss between the batch's source features and as many target features (per source example,
//! so the trainer's per-example mean is `cross-entropy + weight · alignment`). The alignment is
//! Deep CORAL, multi-kernel MMD or DANN's domain classifier on gradient-reversed features
//! (`crate::domain_adapt`). The features are the head's standardised inputs, so the backbone
//! must have trainable parts for the alignment to change anything.

use super::classification::{Classification, PooledFeatures};
use crate::domain_adapt::{coral_loss, dann_lambda, domain_loss, mmd2, Bandwidths};
use crate::features::head::{forward, init_params, layers_of, HeadKind};
use crate::ops::grad_reverse;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the domains' features are aligned.
#[derive(Debug, Clone, PartialEq)]
pub enum Alignment {
    /// Deep CORAL: the covariance distance.
    Coral,
    /// Squared multi-kernel MMD.
    Mmd(Bandwidths),
    /// DANN: a domain classifier (one hidden layer of `hidden` units) on gradient-reversed
    /// features, the reversal strength following `dann_lambda(progress, gamma)`.
    Dann {
        /// Hidden units of the domain classifier.
        hidden: usize,
        /// Steepness of the λ schedule (10 in the paper).
        gamma: f64,
    },
}

/// A [`Classification`] whose examples `0..n_source` are labelled source examples and whose
/// `n_target` further examples (rows `n_source..`) are the unlabelled target domain.
pub struct DomainAdapted<F> {
    inner: Classification<F>,
    n_source: usize,
    n_target: usize,
    alignment: Alignment,
    weight: f64,
    seed: u64,
    total_micro_steps: u64,
    discriminator: Vec<(String, Var)>,
}

impl<F: PooledFeatures> DomainAdapted<F> {
    /// Wraps `inner` (its features cover source then target examples); `total_micro_steps` is
    /// the run's length for DANN's schedule; target rows of each micro-batch are drawn from
    /// `seed` and the micro-batch's index.
    pub fn new(
        inner: Classification<F>,
        n_source: usize,
        n_target: usize,
        alignment: Alignment,
        weight: f64,
        seed: u64,
        total_micro_steps: u64,
    ) -> Result<Self> {
        if n_target == 0 {
            return Err(GraftError::Input("domain adaptation needs target examples".into()));
        }
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(GraftError::Input(format!("the alignment weight must be 0 or more, got {weight}")));
        }
        let discriminator = match &alignment {
            Alignment::Dann { hidden, .. } => {
                let x = inner.inputs(&[0])?;
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd1_5c);
                let params = init_params(HeadKind::Mlp { hidden: *hidden }, x.dim(1)?, 1, &mut rng, x.device())?;
                params.into_iter().map(|(name, var)| (format!("discriminator.{name}"), var)).collect()
            }
            _ => Vec::new(),
        };
        Ok(Self { inner, n_source, n_target, alignment, weight, seed, total_micro_steps, discriminator })
    }

    /// The classification objective inside (its head is the trained classifier).
    pub fn inner(&self) -> &Classification<F> {
        &self.inner
    }

    /// `count` target rows for micro-batch `micro_step`.
    fn target_rows(&self, micro_step: u64, count: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ micro_step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        (0..count).map(|_| self.n_source + rng.random_range(0..self.n_target)).collect()
    }

    /// The alignment loss (a mean) between source and target inputs.
    fn alignment(&self, source: &Tensor, target: &Tensor, micro_step: u64) -> Result<Tensor> {
        match &self.alignment {
            Alignment::Coral => coral_loss(source, target),
            Alignment::Mmd(bandwidths) => mmd2(source, target, bandwidths),
            Alignment::Dann { gamma, .. } => {
                let progress = micro_step as f64 / self.total_micro_steps.max(1) as f64;
                let both = grad_reverse(&Tensor::cat(&[source, target], 0)?, dann_lambda(progress, *gamma))?;
                let logits = forward(&layers_of(&self.discriminator, false), &both)?.flatten_all()?;
                let n = source.dim(0)?;
                let (sum, count) = domain_loss(&logits.narrow(0, 0, n)?, &logits.narrow(0, n, logits.dim(0)? - n)?)?;
                Ok((sum / count as f64)?)
            }
        }
    }
}

impl<F: PooledFeatures> Objective for DomainAdapted<F> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        let mut groups = self.inner.param_groups();
        if !self.discriminator.is_empty() {
            groups.push(ParamGroup::new("discriminator", self.discriminator.clone()));
        }
        groups
    }

    fn buffers(&self) -> Vec<(String, candle_core::Var)> {
        self.inner.buffers()
    }

    fn loss(&self, rows: &Vec<usize>, micro_step: u64) -> Result<ObjectiveLoss> {
        let source = self.inner.inputs(rows)?;
        let target = self.inner.inputs(&self.target_rows(micro_step, rows.len()))?;
        let mut out = self.inner.loss_on(&source, rows)?;
        let align = self.alignment(&source, &target, micro_step)?;
        let b = rows.len() as f64;
        let align_value = align.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let sum = (&out.loss.sum + (align.to_dtype(out.loss.sum.dtype())? * (self.weight * b))?)?;
        out.loss = LossSum { sum, ..out.loss };
        out.metrics.push(("alignment", align_value * b));
        Ok(out)
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}
