//! A sentence-encoder classifier with its top layers trained: each step embeds a batch with the
//! differentiable pass ([`SentenceEncoder::embed_ids`] with [`Pass::Train`]), so gradients
//! reach the unfrozen layers ([`crate::models::bert::Bert::unfreeze_top_layers`]) and the head.
//!
//! With `k = 0` this is the plain encoder probe: [`encoder_features`] and
//! [`train_head`](super::head::train_head). As for decoders, the standardisation in front of the
//! head is fitted on the untrained encoder's embeddings and then kept fixed.

use super::extract::encoder_features;
use super::head::{
    adamw, check_labels, epoch_batches, finite_loss, forward, grads_of, init_params, layers_of, train_head, HeadConfig,
    Standardizer, TrainedHead,
};
use super::tune::BLOCK_LR_RATIO;
use crate::models::bert::{Pass, SentenceEncoder};
use crate::report::LossPoint;
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A head on a sentence encoder whose top layers may have been trained; those weights live in
/// the encoder passed to [`train_encoder_classifier`], so predict with it.
#[derive(Debug, Clone)]
pub struct EncoderClassifier {
    head: TrainedHead,
    unfreeze_top: usize,
    n_layers: usize,
    layer_params: usize,
}

impl EncoderClassifier {
    /// The class of each text, from `enc` (the encoder trained with) in batches of `batch`.
    pub fn predict(&self, enc: &SentenceEncoder, texts: &[String], batch: usize) -> Result<Vec<usize>> {
        let n = enc.model().config().num_hidden_layers;
        if n != self.n_layers || enc.dim() != self.head.dim() {
            return Err(GraftError::Input(format!(
                "this classifier was trained on an encoder with {} layers of width {}, not {n} of width {}",
                self.n_layers,
                self.head.dim(),
                enc.dim()
            )));
        }
        self.head.predict(&encoder_features(enc, texts, batch)?)
    }

    /// Head weights plus the weights of the unfrozen encoder layers.
    pub fn trainable_params(&self) -> usize {
        self.head.trainable_params() + self.layer_params
    }

    /// The head (standardisation and layers).
    pub fn head(&self) -> &TrainedHead {
        &self.head
    }

    /// How many top encoder layers were trained.
    pub fn unfreeze_top(&self) -> usize {
        self.unfreeze_top
    }
}

/// Encoder classification head with the top `unfreeze_top` encoder layers trained too, at
/// `cfg.lr ×` [`BLOCK_LR_RATIO`] without weight decay; the head as in
/// [`train_head`](super::head::train_head). The encoder's top weights become variables and are
/// updated in place.
pub fn train_encoder_classifier(
    enc: &mut SentenceEncoder,
    texts: &[String],
    labels: &[usize],
    n_classes: usize,
    unfreeze_top: usize,
    cfg: &HeadConfig,
) -> Result<(EncoderClassifier, Vec<LossPoint>)> {
    cfg.validate()?;
    check_labels(labels, texts.len(), n_classes)?;
    let n_layers = enc.model().config().num_hidden_layers;
    if unfreeze_top > n_layers {
        return Err(GraftError::Input(format!(
            "cannot unfreeze the top {unfreeze_top} layers of a {n_layers}-layer encoder"
        )));
    }
    let initial = encoder_features(enc, texts, cfg.batch_size)?;
    let done =
        |head: TrainedHead, layer_params: usize| EncoderClassifier { head, unfreeze_top, n_layers, layer_params };
    if unfreeze_top == 0 {
        let (head, losses) = train_head(&initial, labels, n_classes, cfg)?;
        return Ok((done(head, 0), losses));
    }
    let standardizer = Standardizer::fit(&initial)?;
    let device = initial.device().clone();
    let ids = texts.iter().map(|t| Ok(enc.tokenize(t)?.ids)).collect::<Result<Vec<_>>>()?;
    let layer_vars = enc.model_mut().unfreeze_top_layers(unfreeze_top)?;
    let layer_params = layer_vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let head_vars = init_params(cfg.kind, initial.dim(1)?, n_classes, &mut rng, &device)?;
    let mut head_opt = adamw(head_vars.clone(), cfg.weight_decay)?;
    let mut layer_opt = adamw(layer_vars.clone(), 0.0)?;
    let all: Vec<(String, Var)> = head_vars.iter().chain(&layer_vars).cloned().collect();
    let mut losses = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let mut total = 0f64;
        for batch in epoch_batches(texts.len(), cfg.batch_size, &mut rng) {
            let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
            let emb = enc.embed_ids(&seqs, Pass::Train)?;
            let logits = forward(&layers_of(&head_vars, false), &standardizer.apply(&emb)?)?;
            let y: Vec<u32> = batch.iter().map(|&i| labels[i] as u32).collect();
            let loss = candle_nn::loss::cross_entropy(&logits, &Tensor::from_vec(y, batch.len(), &device)?)?;
            total += finite_loss(&loss, epoch)? * batch.len() as f64;
            let grads = grads_of(&loss, &all)?;
            let (head_grads, layer_grads) = grads.split_at(head_vars.len());
            head_opt.step(head_grads, cfg.lr)?;
            layer_opt.step(layer_grads, cfg.lr * BLOCK_LR_RATIO)?;
        }
        losses.push(LossPoint { step: epoch as u64, loss: total / texts.len() as f64 });
    }
    let head = TrainedHead::from_parts(cfg.kind, standardizer, layers_of(&head_vars, true))?;
    Ok((done(head, layer_params), losses))
}
