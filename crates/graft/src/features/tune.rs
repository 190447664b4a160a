//! A decoder classifier with its top blocks trained: the frozen blocks below run once over the
//! training texts and their outputs are kept; each step runs only the top `k` blocks and the
//! final norm on those kept states, pools, and trains them together with a head.
//!
//! With `k = 0` this is a plain probe: features of the whole frozen model and
//! [`train_head`](super::head::train_head). The standardisation in front of the head is fitted
//! on the features of the untrained model and then kept fixed (a constant affine map the head
//! learns on top of).

use super::extract::{
    check_token_seqs, decoder_features, feature_pass, length_order, pad_ids, pool, stack_rows, Pooling,
};
use super::head::{check_labels, fit_classifier, fit_head, HeadConfig, RunOutput, Standardizer, TrainedHead};
use crate::models::llama::{Llama, Pass};
use crate::models::Model;
use crate::objectives::classification::{Classification, PooledFeatures};
use crate::ops::GradSink;
use crate::report::LossPoint;
use crate::train::ParamGroup;
use crate::{GraftError, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// Learning rate of the unfrozen blocks relative to the head's (`HeadConfig::lr`): pretrained
/// weights need far smaller steps than a freshly initialised head.
pub const BLOCK_LR_RATIO: f64 = 0.01;

/// A head on a decoder whose top blocks (and final norm) may have been trained; those weights
/// live in the model that was passed to [`train_decoder_classifier`], so predict with it.
#[derive(Debug, Clone)]
pub struct DecoderClassifier {
    head: TrainedHead,
    pooling: Pooling,
    unfreeze_top: usize,
    n_layers: usize,
    block_params: usize,
}

impl DecoderClassifier {
    /// The class of each sequence, from `model` (the one trained with) in batches of `batch`.
    pub fn predict(&self, model: &Llama, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<usize>> {
        self.head.predict(&self.features(model, seqs, batch)?)
    }

    /// Class scores `[n, n_classes]` of each sequence.
    pub fn logits(&self, model: &Llama, seqs: &[Vec<u32>], batch: usize) -> Result<Tensor> {
        self.head.logits(&self.features(model, seqs, batch)?)
    }

    /// Head weights plus the weights of the unfrozen blocks and final norm.
    pub fn trainable_params(&self) -> usize {
        self.head.trainable_params() + self.block_params
    }

    /// The head (standardisation and layers).
    pub fn head(&self) -> &TrainedHead {
        &self.head
    }

    /// How token states were pooled.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// How many top blocks were trained.
    pub fn unfreeze_top(&self) -> usize {
        self.unfreeze_top
    }

    fn features(&self, model: &Llama, seqs: &[Vec<u32>], batch: usize) -> Result<Tensor> {
        let n = model.config().num_hidden_layers;
        if n != self.n_layers || model.config().hidden_size != self.head.dim() {
            return Err(GraftError::Input(format!(
                "this classifier was trained on a model with {} blocks of width {}, not {n} of width {}",
                self.n_layers,
                self.head.dim(),
                model.config().hidden_size
            )));
        }
        decoder_features(model, seqs, None, self.pooling, batch)
    }
}

/// How a decoder classifier trains its backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderTuning {
    /// Top blocks trained (with the final norm); 0 = a probe on the frozen model.
    pub unfreeze_top: usize,
    /// How token states become one feature vector.
    pub pooling: Pooling,
    /// AdamW learning rate of the unfrozen blocks (no weight decay).
    pub block_lr: f64,
}

/// Decoder classification head with the top `unfreeze_top` blocks (and the final norm) trained
/// too: features below them are computed once, frozen. The blocks train with AdamW at
/// `cfg.lr ×` [`BLOCK_LR_RATIO`] and no weight decay, the head as in
/// [`train_head`](super::head::train_head). The model's top weights become variables and are
/// updated in place; the blocks below are left untouched.
pub fn train_decoder_classifier(
    model: &mut Llama,
    seqs: &[Vec<u32>],
    labels: &[usize],
    n_classes: usize,
    unfreeze_top: usize,
    pooling: Pooling,
    cfg: &HeadConfig,
) -> Result<(DecoderClassifier, Vec<LossPoint>)> {
    train_decoder_classifier_with_block_lr(
        model,
        seqs,
        labels,
        n_classes,
        unfreeze_top,
        pooling,
        cfg,
        cfg.lr * BLOCK_LR_RATIO,
    )
}

/// [`train_decoder_classifier`] with the unfrozen blocks' learning rate given explicitly.
#[allow(clippy::too_many_arguments)] // the seven of train_decoder_classifier plus the rate
pub fn train_decoder_classifier_with_block_lr(
    model: &mut Llama,
    seqs: &[Vec<u32>],
    labels: &[usize],
    n_classes: usize,
    unfreeze_top: usize,
    pooling: Pooling,
    cfg: &HeadConfig,
    block_lr: f64,
) -> Result<(DecoderClassifier, Vec<LossPoint>)> {
    let tuning = DecoderTuning { unfreeze_top, pooling, block_lr };
    fit_decoder_classifier(model, seqs, labels, n_classes, tuning, cfg, RunOutput { dir: None, on_event: &mut |_| {} })
}

/// [`train_decoder_classifier`] as `tuning` says, with checkpoints, `metrics.jsonl` and resume
/// in `out.dir` and progress through `out.on_event`.
pub fn fit_decoder_classifier(
    model: &mut Llama,
    seqs: &[Vec<u32>],
    labels: &[usize],
    n_classes: usize,
    tuning: DecoderTuning,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(DecoderClassifier, Vec<LossPoint>)> {
    let DecoderTuning { unfreeze_top, pooling, block_lr } = tuning;
    cfg.validate()?;
    check_token_seqs(seqs, model.info().vocab_size)?;
    check_labels(labels, seqs.len(), n_classes)?;
    let n_layers = model.config().num_hidden_layers;
    if unfreeze_top > n_layers {
        return Err(GraftError::Input(format!(
            "cannot unfreeze the top {unfreeze_top} blocks of a {n_layers}-block model"
        )));
    }
    if !(block_lr.is_finite() && block_lr > 0.0) {
        return Err(GraftError::Input(format!("the blocks' learning rate must be a positive number, got {block_lr}")));
    }
    let done = |head: TrainedHead, block_params: usize| DecoderClassifier {
        head,
        pooling,
        unfreeze_top,
        n_layers,
        block_params,
    };
    if unfreeze_top == 0 {
        let feats = decoder_features(model, seqs, None, pooling, cfg.batch_size)?;
        let (head, losses) = fit_head(&feats, labels, n_classes, cfg, out)?;
        return Ok((done(head, 0), losses));
    }
    let start = n_layers - unfreeze_top;
    let (lower, initial) = frozen_states(model, seqs, start, pooling, cfg.batch_size)?;
    let standardizer = Standardizer::fit(&initial)?;
    let prefixes: Vec<String> = (start..n_layers).map(|i| format!("model.layers.{i}.")).collect();
    let vars =
        model.make_trainable(|name| name == "model.norm.weight" || prefixes.iter().any(|p| name.starts_with(p)))?;
    let block_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let blocks = ParamGroup { name: "blocks".into(), vars, lr_scale: block_lr / cfg.lr, weight_decay: Some(0.0) };
    let features = TopBlocks { model, lower, start, pooling, blocks };
    let objective = Classification::new(features, standardizer, labels, n_classes, cfg.kind, cfg.seed)?;
    let backbone = serde_json::json!({ "decoder_blocks": n_layers, "unfreeze_top": unfreeze_top, "pooling": pooling, "block_lr": block_lr });
    let (head, losses) = fit_classifier(&objective, cfg, backbone, out)?;
    Ok((done(head, block_params), losses))
}

/// Pooled features of a decoder's top blocks run on kept states of the frozen blocks below.
struct TopBlocks<'a> {
    model: &'a Llama,
    /// Each sequence's residual states after block `start - 1`, `[len, hidden]`.
    lower: Vec<Tensor>,
    start: usize,
    pooling: Pooling,
    blocks: ParamGroup,
}

impl PooledFeatures for TopBlocks<'_> {
    fn pooled(&self, rows: &[usize]) -> Result<Tensor> {
        let (x, lens) = pad_states(&rows.iter().map(|&i| &self.lower[i]).collect::<Vec<_>>())?;
        let hidden = self.model.hidden_from_block(&x, self.start, Pass::Train)?;
        pool(&hidden, &lens, self.pooling)
    }

    fn param_group(&self) -> Option<ParamGroup> {
        Some(self.blocks.clone())
    }

    fn grad_sink(&self) -> Option<Arc<GradSink>> {
        self.model.grad_sink()
    }
}

/// Runs the frozen blocks `0..start` once: each sequence's residual states `[len, hidden]`
/// (detached), and the pooled features of the still untrained full model `[n, hidden]` (to fit
/// the standardisation on).
fn frozen_states(
    model: &Llama,
    seqs: &[Vec<u32>],
    start: usize,
    pooling: Pooling,
    batch: usize,
) -> Result<(Vec<Tensor>, Tensor)> {
    let lower = states_after(model, seqs, start, batch)?;
    let pass = feature_pass(model);
    let mut pooled: Vec<Option<Tensor>> = vec![None; seqs.len()];
    for chunk in length_order(seqs).chunks(batch) {
        let (x, lens) = pad_states(&chunk.iter().map(|&i| &lower[i]).collect::<Vec<_>>())?;
        let feats = pool(&model.hidden_from_block(&x, start, pass)?.detach(), &lens, pooling)?;
        for (row, &i) in chunk.iter().enumerate() {
            pooled[i] = Some(feats.get(row)?);
        }
    }
    Ok((lower, stack_rows(pooled)?))
}

/// Each sequence's residual states `[len, hidden]` after the frozen blocks `0..start`
/// (detached), computed in batches of `batch`: the kept input of blocks that train.
pub(crate) fn states_after(model: &Llama, seqs: &[Vec<u32>], start: usize, batch: usize) -> Result<Vec<Tensor>> {
    check_token_seqs(seqs, model.info().vocab_size)?;
    let pass = feature_pass(model);
    let mut lower: Vec<Option<Tensor>> = vec![None; seqs.len()];
    for chunk in length_order(seqs).chunks(batch) {
        let group: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
        let (ids, lens) = pad_ids(&group, model.device())?;
        let states = model.hidden_after_blocks(&ids, start, pass)?.detach();
        for (row, &i) in chunk.iter().enumerate() {
            lower[i] = Some(states.get(row)?.narrow(0, 0, lens[row])?.contiguous()?);
        }
    }
    lower
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| GraftError::Input("internal: a sequence's states were not computed".into()))
}

/// Right-pads per-sequence states `[len_i, hidden]` with zero rows into `[b, longest, hidden]`.
/// Zero rows are harmless after real positions under causal attention (and RMSNorm maps them
/// to zero).
pub(crate) fn pad_states(states: &[&Tensor]) -> Result<(Tensor, Vec<usize>)> {
    let lens: Vec<usize> = states.iter().map(|s| s.dim(0)).collect::<candle_core::Result<_>>()?;
    let width = lens.iter().copied().max().unwrap_or(0);
    let rows = states
        .iter()
        .zip(&lens)
        .map(|(s, &l)| {
            if l == width {
                return Ok((*s).clone());
            }
            let pad = Tensor::zeros((width - l, s.dim(1)?), s.dtype(), s.device())?;
            Ok(Tensor::cat(&[*s, &pad], 0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((Tensor::stack(&rows, 0)?, lens))
}
