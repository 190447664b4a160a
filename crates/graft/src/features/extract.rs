//! Frozen-backbone features: one vector per text from a decoder's hidden states (pooled over the
//! real tokens, or taken at the last one, after a chosen number of blocks) or from a sentence
//! encoder's mean-pooled, L2-normalised embedding.
//!
//! Sequences of one batch are right-padded to the longest. A decoder's causal attention never
//! lets a real position see the padding after it, and pooling reads only real positions, so a
//! batched feature equals the one computed alone (up to float summation order). Texts are
//! grouped by length before batching, so batches carry little padding; rows come back in input
//! order.

use crate::models::bert::{mean_pool, SentenceEncoder};
use crate::models::llama::{Llama, Pass};
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// How a sequence's per-token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the sequence's real (non-padding) positions.
    Mean,
    /// The state at the last real position (for a causal decoder, the only one that has seen
    /// the whole text).
    Last,
}

/// The pass a frozen decoder runs features with: the fused inference kernels, except for a
/// quantized base, whose inference kernel rounds activations to 8 bits; the training ops
/// multiply with dequantized weights instead.
pub fn feature_pass(model: &Llama) -> Pass {
    if model.has_quantized() {
        Pass::Train
    } else {
        Pass::Infer
    }
}

/// `[n, hidden]` f32, detached, on the model's device.
///
/// `layer`: number of decoder blocks to run (`None` = all blocks + final norm). `Some(0)` is the
/// token embeddings; `Some(n)` below the block count is the residual stream after `n` blocks
/// (Hugging Face's `hidden_states[n]`); `Some(count)` equals `None`, as in Hugging Face, whose
/// last hidden state is taken after the final norm. Sequences are right-padded per batch of at
/// most `batch`; causal attention makes padding harmless, pooling uses only real positions.
/// Uses the inference pass (fast kernels) unless the base is quantized ([`feature_pass`]).
///
/// Errors: no sequences, an empty sequence, a token id outside the vocabulary, `batch` 0,
/// `layer` above the block count, virtual tokens set on the model.
pub fn decoder_features(
    model: &Llama,
    seqs: &[Vec<u32>],
    layer: Option<usize>,
    pooling: Pooling,
    batch: usize,
) -> Result<Tensor> {
    check_token_seqs(seqs, model.info().vocab_size)?;
    check_batch(batch)?;
    let n_blocks = model.config().num_hidden_layers;
    let layer = layer.unwrap_or(n_blocks);
    if layer > n_blocks {
        return Err(GraftError::Input(format!(
            "feature layer {layer} asked for, but the model has {n_blocks} decoder blocks (choose 0..={n_blocks})"
        )));
    }
    let pass = feature_pass(model);
    let device = model.device();
    let mut rows: Vec<Option<Tensor>> = vec![None; seqs.len()];
    for chunk in length_order(seqs).chunks(batch) {
        let group: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
        let (ids, lens) = pad_ids(&group, device)?;
        let mut hidden = model.hidden_after_blocks(&ids, layer, pass)?;
        if layer == n_blocks {
            hidden = model.final_norm(&hidden, pass)?;
        }
        let pooled = pool(&hidden.detach(), &lens, pooling)?;
        for (row, &i) in chunk.iter().enumerate() {
            rows[i] = Some(pooled.get(row)?);
        }
    }
    stack_rows(rows)
}

/// `[n, dim]` mean-pooled, L2-normalised sentence embeddings
/// ([`SentenceEncoder::embed`], inference pass), f32, on the encoder's device.
pub fn encoder_features(enc: &SentenceEncoder, texts: &[String], batch: usize) -> Result<Tensor> {
    if texts.is_empty() {
        return Err(GraftError::Input("no texts to compute encoder features for".into()));
    }
    check_batch(batch)?;
    Ok(enc.embed(texts, batch, &mut |_| {})?.vectors.to_dtype(DType::F32)?.detach())
}

/// Pools `hidden [b, t, h]` whose row `i` has `lens[i]` real positions: `[b, h]` in f32.
pub fn pool(hidden: &Tensor, lens: &[usize], pooling: Pooling) -> Result<Tensor> {
    let pooled = pool_precise(hidden, lens, pooling)?;
    Ok(if pooled.dtype() == DType::F32 { pooled } else { pooled.to_dtype(DType::F32)? })
}

/// [`pool`] in f32, or in f64 for f64 states (gradient checks by finite differences need it).
pub fn pool_precise(hidden: &Tensor, lens: &[usize], pooling: Pooling) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    if lens.len() != b || lens.iter().any(|&l| l == 0 || l > t) {
        return Err(GraftError::Input(format!("pool: lengths {lens:?} for {b} rows of {t} positions")));
    }
    let hidden = match hidden.dtype() {
        DType::F32 | DType::F64 => hidden.clone(),
        _ => hidden.to_dtype(DType::F32)?,
    };
    match pooling {
        Pooling::Last => {
            let index: Vec<u32> = lens.iter().enumerate().map(|(i, &l)| (i * t + l - 1) as u32).collect();
            let index = Tensor::from_vec(index, b, hidden.device())?;
            Ok(hidden.reshape((b * t, h))?.index_select(&index, 0)?)
        }
        Pooling::Mean => {
            let mut mask = Vec::with_capacity(b * t);
            for &l in lens {
                mask.extend((0..t).map(|j| if j < l { 1f32 } else { 0f32 }));
            }
            let mask = Tensor::from_vec(mask, (b, t), hidden.device())?;
            mean_pool(&hidden, &mask)
        }
    }
}

/// Right-pads `seqs` with id 0 into `[b, longest]` u32 ids; returns the ids and each length.
pub fn pad_ids(seqs: &[&[u32]], device: &Device) -> Result<(Tensor, Vec<usize>)> {
    let width = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    if width == 0 {
        return Err(GraftError::Input("cannot pad an empty batch or empty sequences".into()));
    }
    let mut ids = Vec::with_capacity(seqs.len() * width);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(0u32, width - s.len()));
    }
    let lens = seqs.iter().map(|s| s.len()).collect();
    Ok((Tensor::from_vec(ids, (seqs.len(), width), device)?, lens))
}

/// Indices of `seqs` sorted by length (stable), so that consecutive batches pad little.
pub(crate) fn length_order(seqs: &[Vec<u32>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    order
}

/// Stacks per-input rows that every batch filled in.
pub(crate) fn stack_rows(rows: Vec<Option<Tensor>>) -> Result<Tensor> {
    let rows: Vec<Tensor> = rows
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| GraftError::Input("internal: a feature row was not computed".into()))?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// Refuses no sequences, an empty one, or a token id outside the vocabulary, naming it.
pub(crate) fn check_token_seqs(seqs: &[Vec<u32>], vocab: usize) -> Result<()> {
    if seqs.is_empty() {
        return Err(GraftError::Input("no sequences to compute decoder features for".into()));
    }
    for (i, s) in seqs.iter().enumerate() {
        if s.is_empty() {
            return Err(GraftError::Input(format!("sequence {i} is empty: every text needs at least one token")));
        }
        if let Some(&id) = s.iter().find(|&&id| id as usize >= vocab) {
            return Err(GraftError::Input(format!(
                "sequence {i} holds token id {id}, outside the model's vocabulary of {vocab}; was it tokenized for another model?"
            )));
        }
    }
    Ok(())
}

fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(GraftError::Input("batch size must be at least 1".into()));
    }
    Ok(())
}
