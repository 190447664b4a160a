//! A sentence-encoder classifier with its top layers trained: each step embeds a batch with the
//! differentiable pass ([`SentenceEncoder::embed_ids_grouped`] with [`Pass::Train`]), so gradients
//! reach the unfrozen layers ([`crate::models::bert::Bert::unfreeze_top_layers`]) and the head.
//!
//! With `k = 0` this is the plain encoder probe: [`encoder_features`] and
//! [`train_head`](super::head::train_head). As for decoders, the standardisation in front of the
//! head is fitted on the untrained encoder's embeddings and then kept fixed.

use super::extract::encoder_features;
use super::head::{check_labels, fit_classifier, fit_head, HeadConfig, RunOutput, Standardizer, TrainedHead};
use super::tune::BLOCK_LR_RATIO;
use crate::models::bert::{Pass, SentenceEncoder};
use crate::objectives::classification::{Classification, PooledFeatures};
use crate::report::LossPoint;
use crate::train::ParamGroup;
use crate::{GraftError, Result};
use candle_core::Tensor;

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
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    fit_encoder_classifier(enc, texts, labels, n_classes, unfreeze_top, cfg, out)
}

/// [`train_encoder_classifier`] with checkpoints, `metrics.jsonl` and resume in `out.dir` and
/// progress through `out.on_event`.
pub fn fit_encoder_classifier(
    enc: &mut SentenceEncoder,
    texts: &[String],
    labels: &[usize],
    n_classes: usize,
    unfreeze_top: usize,
    cfg: &HeadConfig,
    out: RunOutput,
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
        let (head, losses) = fit_head(&initial, labels, n_classes, cfg, out)?;
        return Ok((done(head, 0), losses));
    }
    let standardizer = Standardizer::fit(&initial)?;
    let ids = texts.iter().map(|t| Ok(enc.tokenize(t)?.ids)).collect::<Result<Vec<_>>>()?;
    let vars = enc.model_mut().unfreeze_top_layers(unfreeze_top)?;
    let layer_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let layers = ParamGroup { name: "layers".into(), vars, lr_scale: BLOCK_LR_RATIO, weight_decay: Some(0.0) };
    let objective =
        Classification::new(TopLayers { enc, ids, layers }, standardizer, labels, n_classes, cfg.kind, cfg.seed)?;
    let backbone = serde_json::json!({ "encoder_layers": n_layers, "unfreeze_top": unfreeze_top });
    let (head, losses) = fit_classifier(&objective, cfg, backbone, out)?;
    Ok((done(head, layer_params), losses))
}

/// Sentence embeddings from the differentiable pass, gradients reaching the unfrozen layers.
struct TopLayers<'a> {
    enc: &'a SentenceEncoder,
    /// Each text's token ids.
    ids: Vec<Vec<u32>>,
    layers: ParamGroup,
}

impl PooledFeatures for TopLayers<'_> {
    fn pooled(&self, rows: &[usize]) -> Result<Tensor> {
        let seqs: Vec<Vec<u32>> = rows.iter().map(|&i| self.ids[i].clone()).collect();
        self.enc.embed_ids_grouped(&seqs, Pass::Train)
    }

    fn param_group(&self) -> Option<ParamGroup> {
        Some(self.layers.clone())
    }
}
