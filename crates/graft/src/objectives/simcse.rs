//! Unsupervised SimCSE (Gao et al. 2021) for sentence encoders: each text of a batch is encoded
//! twice in one forward with the encoder's dropout active, so the two copies get different masks
//! (two views); the loss is the cross-entropy of each first view against all second views of
//! the batch by cosine similarity over a temperature, the positive on the diagonal (in-batch
//! negatives). Alignment and uniformity (Wang & Isola 2020) and the mean pairwise cosine are
//! reported with it to catch a collapse of the embedding space.

use crate::models::bert::{Dropout, Pass, SentenceEncoder};
use crate::train::loss::nll_sum;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The `[simcse]` section of an encoder-pretraining config: its presence selects SimCSE instead
/// of masked LM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimcseSpec {
    /// Temperature τ dividing the cosine similarities. Default 0.05 (the paper's).
    pub temperature: f64,
    /// Dropout rate of the encoder during training (hidden states and attention
    /// probabilities), the only source of the two views. Default 0.1 (BERT's).
    pub dropout: f64,
}

impl Default for SimcseSpec {
    fn default() -> Self {
        Self { temperature: 0.05, dropout: 0.1 }
    }
}

impl SimcseSpec {
    /// Checks the temperature (positive) and the dropout rate (in `(0, 1)`: without dropout
    /// the two views are identical and the loss teaches nothing).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(GraftError::Input(format!(
                "config key `simcse.temperature`: must be positive, got {}",
                self.temperature
            )));
        }
        if !(self.dropout > 0.0 && self.dropout < 1.0) {
            return Err(GraftError::Input(format!(
                "config key `simcse.dropout`: must be in (0, 1) (dropout makes the two views), got {}",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// Σᵢ −log softmaxⱼ(cos(aᵢ, bⱼ) / τ)\[i\]: the SimCSE loss of unit-norm rows `a`, `b` `[n, dim]`
/// (row `i` of each is a view of text `i`), summed over the `n` texts; computed in f32, or f64
/// for f64 inputs.
pub fn contrastive_loss(a: &Tensor, b: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = a.dim(0)?;
    if n < 2 || b.dim(0)? != n {
        return Err(GraftError::Input(format!(
            "SimCSE needs two views of at least 2 texts (in-batch negatives); got {n} and {}",
            b.dim(0)?
        )));
    }
    let logits = (a.matmul(&b.t()?)? / temperature)?;
    let labels = Tensor::arange(0u32, n as u32, a.device())?;
    Ok(nll_sum(&logits, &labels)?.0)
}

/// Geometry of a batch of embedding pairs, measured without gradients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Geometry {
    /// Mean ‖aᵢ − bᵢ‖² of the normalised views of the same text (0 = identical views).
    pub alignment: f64,
    /// log mean exp(−2‖aᵢ − aⱼ‖²) over pairs `i ≠ j` of first views (lower = more uniform on
    /// the sphere; 0 = collapsed to one point).
    pub uniformity: f64,
    /// Mean cos(aᵢ, aⱼ) over pairs `i ≠ j` (near 1 = collapsed).
    pub mean_cosine: f64,
}

/// Alignment, uniformity and mean pairwise cosine of unit-norm views `a`, `b` `[n, dim]`
/// (`n ≥ 2`).
pub fn geometry(a: &Tensor, b: &Tensor) -> Result<Geometry> {
    let rows = |t: &Tensor| -> Result<Vec<Vec<f64>>> { Ok(t.detach().to_dtype(DType::F64)?.to_vec2::<f64>()?) };
    let (a, b) = (rows(a)?, rows(b)?);
    let n = a.len();
    if n < 2 || b.len() != n {
        return Err(GraftError::Input(format!("geometry needs two views of at least 2 texts; got {n}")));
    }
    let sq = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let alignment = a.iter().zip(&b).map(|(x, y)| sq(x, y)).sum::<f64>() / n as f64;
    let pairs = (n * (n - 1)) as f64;
    let (mut gauss, mut cos) = (0.0, 0.0);
    for (i, x) in a.iter().enumerate() {
        for (j, y) in a.iter().enumerate() {
            if i != j {
                gauss += (-2.0 * sq(x, y)).exp();
                cos += dot(x, y);
            }
        }
    }
    Ok(Geometry { alignment, uniformity: (gauss / pairs).ln(), mean_cosine: cos / pairs })
}

/// SimCSE training of an encoder over tokenized texts; a batch is a list of text indices.
pub struct Simcse<'a> {
    encoder: &'a SentenceEncoder,
    texts: Vec<Vec<u32>>,
    spec: SimcseSpec,
    seed: u64,
    groups: Vec<ParamGroup>,
}

impl<'a> Simcse<'a> {
    /// The objective over `texts` (token ids, special tokens included), training `groups`;
    /// dropout masks come from `(seed, micro_step)`.
    pub fn new(
        encoder: &'a SentenceEncoder,
        texts: Vec<Vec<u32>>,
        spec: SimcseSpec,
        seed: u64,
        groups: Vec<ParamGroup>,
    ) -> Result<Self> {
        spec.validate()?;
        Ok(Self { encoder, texts, spec, seed, groups })
    }

    /// The two dropout views `[n, dim]` of the texts `rows`: one forward over the batch
    /// doubled, dropout drawn from the stream `micro_step`.
    pub fn views(&self, rows: &[usize], micro_step: u64, pass: Pass) -> Result<(Tensor, Tensor)> {
        let seqs = rows
            .iter()
            .map(|&i| self.texts.get(i).cloned().ok_or_else(|| GraftError::Input(format!("no text {i}"))))
            .collect::<Result<Vec<_>>>()?;
        let doubled: Vec<Vec<u32>> = seqs.iter().chain(&seqs).cloned().collect();
        let dropout = Dropout::new(self.spec.dropout, self.seed, micro_step);
        let z = self.encoder.embed_ids_dropout(&doubled, pass, Some(&dropout))?;
        let n = seqs.len();
        Ok((z.narrow(0, 0, n)?, z.narrow(0, n, n)?))
    }

    /// Mean loss per text and the mean geometry over `batches` of text indices, without
    /// gradients; batch `i` draws its dropout as micro-step `u64::MAX - i`, the same at every
    /// evaluation. Batches of one text are skipped (no negative).
    pub fn evaluate(&self, batches: &[Vec<usize>]) -> Result<(f64, Geometry)> {
        let (mut total, mut count) = (0.0, 0usize);
        let mut sums = Geometry { alignment: 0.0, uniformity: 0.0, mean_cosine: 0.0 };
        let mut measured = 0usize;
        for (i, rows) in batches.iter().enumerate().filter(|(_, r)| r.len() >= 2) {
            let (a, b) = self.views(rows, u64::MAX - i as u64, Pass::Infer)?;
            total += contrastive_loss(&a, &b, self.spec.temperature)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            count += rows.len();
            let g = geometry(&a, &b)?;
            sums.alignment += g.alignment;
            sums.uniformity += g.uniformity;
            sums.mean_cosine += g.mean_cosine;
            measured += 1;
        }
        if measured == 0 {
            return Err(GraftError::Input("the evaluation set has no batch of 2 or more texts".into()));
        }
        let m = measured as f64;
        Ok((
            total / count as f64,
            Geometry {
                alignment: sums.alignment / m,
                uniformity: sums.uniformity / m,
                mean_cosine: sums.mean_cosine / m,
            },
        ))
    }
}

impl Objective for Simcse<'_> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        self.groups.clone()
    }

    fn loss(&self, rows: &Vec<usize>, micro_step: u64) -> Result<ObjectiveLoss> {
        let (a, b) = self.views(rows, micro_step, Pass::Train)?;
        let sum = contrastive_loss(&a, &b, self.spec.temperature)?;
        let g = geometry(&a, &b)?;
        // Metrics are sums over the step's texts; the trainer divides by their count.
        let n = rows.len() as f64;
        Ok(ObjectiveLoss {
            loss: LossSum { sum, count: rows.len(), sink: None },
            metrics: vec![
                ("alignment", g.alignment * n),
                ("uniformity", g.uniformity * n),
                ("mean_cosine", g.mean_cosine * n),
            ],
        })
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.iter().filter_map(|&i| self.texts.get(i)).map(Vec::len).sum()
    }
}
