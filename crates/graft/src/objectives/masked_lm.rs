//! The masked-language-modelling objective for BERT-family encoders: mask a batch of token
//! sequences ([`super::masking`], drawn from `(seed, micro_step)`), run the encoder on the
//! corrupted inputs, and sum the cross-entropy of the MLM head's predictions of the original
//! tokens at the target positions only. Logits exist for the target rows alone (about 15 % of
//! the positions), never for the whole `[tokens × vocab]`; the decoder is the encoder's word
//! embedding table (tied). The metric is `accuracy`: targets predicted right.

use super::masking::{mask_batch, MaskVocab, Masked, MaskingSpec};
use crate::features::head::argmax_rows;
use crate::models::bert::{Bert, BertInput, MlmHead, Pass};
use crate::train::loss::nll_sum;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};

/// Summed loss of one masked batch, with its target count and how many were predicted right.
pub struct MlmLoss {
    /// Σ −log p(original token) over the targets (f32, or f64 for an f64 model), with a graph to
    /// the trainable weights on [`Pass::Train`].
    pub sum: Tensor,
    /// Number of targets.
    pub count: usize,
    /// Targets whose most likely token is the original.
    pub correct: usize,
}

/// The MLM loss of `masked` (inputs padded with `pad_id`): encoder forward, the hidden states
/// of the target rows only, the head with `model`'s word embeddings as decoder.
pub fn mlm_loss(model: &Bert, head: &MlmHead, masked: &Masked, pad_id: u32, pass: Pass) -> Result<MlmLoss> {
    if masked.targets.is_empty() {
        return Err(GraftError::Input("a masked batch has no target: every sequence is special tokens only".into()));
    }
    let input = BertInput::pad(&masked.inputs, pad_id, model.dtype(), model.device())?;
    let hidden = model.forward(&input, pass)?;
    let (b, t, h) = hidden.dims3()?;
    let rows: Vec<u32> = masked.targets.iter().map(|x| (x.row * t + x.pos) as u32).collect();
    let n = rows.len();
    let rows = hidden.reshape((b * t, h))?.index_select(&Tensor::from_vec(rows, n, model.device())?, 0)?;
    let logits = head.logits(&rows, model.word_embeddings(), pass)?;
    let labels: Vec<u32> = masked.targets.iter().map(|x| x.id).collect();
    let correct = argmax_rows(&logits.detach())?.iter().zip(&labels).filter(|&(&p, &l)| p == l as usize).count();
    let (sum, count) = nll_sum(&logits, &Tensor::from_vec(labels, n, model.device())?)?;
    Ok(MlmLoss { sum, count, correct })
}

/// The texts a masked-LM run trains on and how they are masked.
#[derive(Debug, Clone)]
pub struct MaskedTexts {
    /// Each text's token ids (special tokens included, unpadded), each with at least one
    /// maskable token.
    pub ids: Vec<Vec<u32>>,
    /// Which ids are special, `[MASK]`, continuation pieces.
    pub vocab: MaskVocab,
    /// Rate, replacement shares, whole-word masking.
    pub spec: MaskingSpec,
    /// Seed of the masking streams (one per micro-step).
    pub seed: u64,
    /// Padding id of the batches.
    pub pad_id: u32,
}

/// Masked-LM training of an encoder and its head over tokenized texts; a batch is a list of
/// text indices.
pub struct MaskedLm<'a> {
    model: &'a Bert,
    head: &'a MlmHead,
    texts: MaskedTexts,
    groups: Vec<ParamGroup>,
}

impl<'a> MaskedLm<'a> {
    /// The objective over `texts`, training `groups` (encoder weights, head).
    pub fn new(model: &'a Bert, head: &'a MlmHead, texts: MaskedTexts, groups: Vec<ParamGroup>) -> Result<Self> {
        texts.spec.validate()?;
        Ok(Self { model, head, texts, groups })
    }

    /// The sequences of `rows`, masked as micro-batch `micro_step` is.
    pub fn masked(&self, rows: &[usize], micro_step: u64) -> Result<Masked> {
        let seqs = rows
            .iter()
            .map(|&i| self.texts.ids.get(i).cloned().ok_or_else(|| GraftError::Input(format!("no text {i}"))))
            .collect::<Result<Vec<_>>>()?;
        let t = &self.texts;
        Ok(mask_batch(&seqs, &t.vocab, &t.spec, t.seed, micro_step))
    }

    /// Mean loss per target and accuracy over `batches` of text indices, without gradients;
    /// batch `i` is masked as micro-step `u64::MAX - i`, the same at every evaluation.
    pub fn evaluate(&self, batches: &[Vec<usize>]) -> Result<(f64, f64)> {
        let (mut total, mut count, mut correct) = (0.0, 0, 0);
        for (i, rows) in batches.iter().enumerate() {
            let l = mlm_loss(
                self.model,
                self.head,
                &self.masked(rows, u64::MAX - i as u64)?,
                self.texts.pad_id,
                Pass::Infer,
            )?;
            total += l.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            count += l.count;
            correct += l.correct;
        }
        if count == 0 {
            return Err(GraftError::Input("the evaluation set has no masked token".into()));
        }
        Ok((total / count as f64, correct as f64 / count as f64))
    }
}

impl Objective for MaskedLm<'_> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        self.groups.clone()
    }

    fn loss(&self, rows: &Vec<usize>, micro_step: u64) -> Result<ObjectiveLoss> {
        let l = mlm_loss(self.model, self.head, &self.masked(rows, micro_step)?, self.texts.pad_id, Pass::Train)?;
        Ok(ObjectiveLoss {
            loss: LossSum { sum: l.sum, count: l.count, sink: None },
            metrics: vec![("accuracy", l.correct as f64)],
        })
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.iter().filter_map(|&i| self.texts.ids.get(i)).map(Vec::len).sum()
    }
}
