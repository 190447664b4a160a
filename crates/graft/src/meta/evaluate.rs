//! Scoring few-shot learners on episodes: each learner sees an episode's support set and
//! classifies its queries; the accuracies of many episodes become a mean with a 95 % confidence
//! interval. The baselines live here: on frozen features, nearest centroid and a fresh linear
//! head trained on the support set by the one trainer; without meta-training, a copy of the
//! backbone (sentence encoder, decoder blocks or image backbone) fine-tuned with a fresh head on
//! each support set.

use super::episodes::{Episode, EpisodeSampler};
use super::lora_protonet::AdaptedBlocks;
use super::projection::Projection;
use super::score_log::ScoreLog;
use crate::features::encoder_tune::train_encoder_classifier;
use crate::features::head::{fit_classifier, HeadConfig, HeadKind, RunOutput, Standardizer, TrainedHead};
use crate::features::tune::BLOCK_LR_RATIO;
use crate::models::bert::SentenceEncoder;
use crate::models::efficientnet::EfficientNetLite;
use crate::models::llama::{Llama, Pass};
use crate::objectives::classification::{Classification, FixedFeatures, PooledFeatures};
use crate::objectives::protonet::{count_correct, neg_sq_distances, prototypes};
use crate::ops::GradSink;
use crate::report::LossPoint;
use crate::train::ParamGroup;
use crate::vision::classifier::{fit_image_classifier_with, Backbone, ImageInput, LabelledImages};
use crate::vision::Image;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Mean accuracy over episodes with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Mean of the episodes' query accuracies.
    pub mean: f64,
    /// Half-width of the 95 % confidence interval of the mean: `1.96 · std / √n`.
    pub ci95: f64,
    /// Sample standard deviation (n − 1) of the episode accuracies.
    pub std: f64,
    /// Episodes scored.
    pub episodes: usize,
}

impl Accuracy {
    /// The mean, standard deviation and 95 % interval of per-episode accuracies; an empty list
    /// is an error.
    pub fn of(accs: &[f64]) -> Result<Self> {
        let n = accs.len();
        if n == 0 {
            return Err(GraftError::Input("no episodes to score".into()));
        }
        let mean = accs.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let std = var.sqrt();
        Ok(Self { mean, ci95: 1.96 * std / (n as f64).sqrt(), std, episodes: n })
    }
}

/// Rows `rows` of `features [n, d]`.
pub fn select_rows(features: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    Ok(features.index_select(&Tensor::from_vec(idx, rows.len(), features.device())?, 0)?)
}

/// Query accuracy of nearest-prototype classification (squared Euclidean) of `support` and
/// `query` rows (already embedded / projected) of `ep`.
pub fn centroid_accuracy(support: &Tensor, query: &Tensor, ep: &Episode) -> Result<f64> {
    let n_way = ep.ways.len();
    let logits = neg_sq_distances(query, &prototypes(support, &ep.support_labels, n_way)?)?;
    Ok(count_correct(&logits, &ep.query_labels)? as f64 / ep.query.len() as f64)
}

/// The nearest-centroid baseline on frozen `features`: each query goes to the way whose mean
/// support embedding is nearest.
pub fn nearest_centroid(features: &Tensor, ep: &Episode) -> Result<f64> {
    centroid_accuracy(&select_rows(features, &ep.support)?, &select_rows(features, &ep.query)?, ep)
}

/// A prototypical network's accuracy: nearest centroid after the trained `projection`.
pub fn protonet_accuracy(features: &Tensor, projection: &Projection, ep: &Episode) -> Result<f64> {
    let project = |rows: &[usize]| projection.apply(&select_rows(features, rows)?);
    centroid_accuracy(&project(&ep.support)?, &project(&ep.query)?, ep)
}

/// The fine-tuned-head baseline: a fresh linear head (`cfg`, its kind ignored) behind
/// `standardizer`, trained on the episode's support set with the trainer (in memory), scored on
/// its queries.
pub fn linear_head(features: &Tensor, standardizer: &Standardizer, cfg: &HeadConfig, ep: &Episode) -> Result<f64> {
    let support = select_rows(features, &ep.support)?.to_dtype(DType::F32)?;
    let n_way = ep.ways.len();
    let objective = Classification::new(
        FixedFeatures(support),
        standardizer.clone(),
        &ep.support_labels,
        n_way,
        HeadKind::Linear,
        cfg.seed,
    )?;
    let cfg = HeadConfig { kind: HeadKind::Linear, ..cfg.clone() };
    let (head, _) =
        fit_classifier(&objective, &cfg, serde_json::Value::Null, RunOutput { dir: None, on_event: &mut |_| {} })?;
    let pred = head.predict(&select_rows(features, &ep.query)?.to_dtype(DType::F32)?)?;
    Ok(query_accuracy(&pred, ep))
}

/// The whole-backbone baseline (transfer without meta-training): a copy of `encoder` whose top
/// `layers` layers train together with a fresh linear head (`cfg`, its kind ignored; the layers
/// at `cfg.lr ×` [`BLOCK_LR_RATIO`](crate::features::tune::BLOCK_LR_RATIO)) on the episode's
/// support texts, scored on its queries. `texts` are the dataset's inputs, indexed by the
/// episode's rows. The head's standardisation is fitted on the support embeddings.
pub fn fine_tuned_encoder(
    encoder: &SentenceEncoder,
    texts: &[String],
    layers: usize,
    cfg: &HeadConfig,
    ep: &Episode,
) -> Result<f64> {
    let mut enc = encoder.clone();
    let pick = |rows: &[usize]| rows.iter().map(|&i| texts[i].clone()).collect::<Vec<_>>();
    let cfg = HeadConfig { kind: HeadKind::Linear, ..cfg.clone() };
    let (clf, _) =
        train_encoder_classifier(&mut enc, &pick(&ep.support), &ep.support_labels, ep.ways.len(), layers, &cfg)?;
    let pred = clf.predict(&enc, &pick(&ep.query), cfg.batch_size)?;
    Ok(query_accuracy(&pred, ep))
}

/// The whole-backbone baseline on images: a copy of `model` whose top `units` units train
/// together with a fresh linear head (`cfg`, its kind ignored; the units at `cfg.lr ×`
/// [`BLOCK_LR_RATIO`](crate::features::tune::BLOCK_LR_RATIO), batch norms on their running
/// statistics) on the episode's support images, read as `input` says, scored on its queries.
/// `images` are the dataset's inputs, indexed by the episode's rows; `model` is left as it is.
pub fn fine_tuned_image_backbone(
    model: &EfficientNetLite,
    images: &[Image],
    units: usize,
    cfg: &HeadConfig,
    input: &ImageInput,
    ep: &Episode,
) -> Result<f64> {
    let mut copy = model.clone();
    let pick = |rows: &[usize]| rows.iter().map(|&i| &images[i]).collect::<Vec<_>>();
    let cfg = HeadConfig { kind: HeadKind::Linear, ..cfg.clone() };
    let support = pick(&ep.support);
    let data = LabelledImages { images: &support, labels: &ep.support_labels, n_classes: ep.ways.len() };
    let quiet = RunOutput { dir: None, on_event: &mut |_| {} };
    let (clf, _) = fit_image_classifier_with(&mut copy, data, Backbone::top_units(units), input, &cfg, quiet)?;
    Ok(query_accuracy(&clf.predict(&copy, &pick(&ep.query), input)?, ep))
}

/// The whole-backbone baseline inside a decoder: [`fine_tune_decoder_on_support`], scored on
/// the episode's queries.
pub fn fine_tuned_decoder(blocks: &AdaptedBlocks, cfg: &HeadConfig, ep: &Episode) -> Result<f64> {
    let tuned = fine_tune_decoder_on_support(blocks, cfg, ep)?;
    let query = blocks.through(&tuned.model).features(&ep.query, Pass::Infer)?;
    Ok(query_accuracy(&tuned.head.predict(&query)?, ep))
}

/// A copy of a decoder whose blocks were fine-tuned on one support set, with its head.
pub struct TunedDecoder {
    /// The copy; the decoder it was made from is left as it was.
    pub model: Llama,
    /// The fresh linear head trained with it (its standardisation included).
    pub head: TrainedHead,
    /// Mean support loss per epoch.
    pub losses: Vec<LossPoint>,
}

/// Fine-tunes a copy of `blocks`' decoder on `ep`'s support texts: its blocks `blocks.blocks()`
/// (and the final norm when they end the model) train together with a fresh linear head
/// (`cfg`, its kind ignored; the blocks at `cfg.lr ×`
/// [`BLOCK_LR_RATIO`](crate::features::tune::BLOCK_LR_RATIO), no weight decay), reading the
/// states kept below them. The standardisation in front of the head is fitted on the support
/// set's untrained features.
pub fn fine_tune_decoder_on_support(blocks: &AdaptedBlocks, cfg: &HeadConfig, ep: &Episode) -> Result<TunedDecoder> {
    let mut model = blocks.model().clone();
    let range = blocks.blocks();
    let ends_model = range.end == model.config().num_hidden_layers;
    let prefixes: Vec<String> = range.clone().map(|i| format!("model.layers.{i}.")).collect();
    let vars = model.make_trainable(|name| {
        (ends_model && name == "model.norm.weight") || prefixes.iter().any(|p| name.starts_with(p))
    })?;
    let (head, losses) = {
        let view = blocks.through(&model);
        let cfg = HeadConfig { kind: HeadKind::Linear, ..cfg.clone() };
        let standardizer = Standardizer::fit(&view.features(&ep.support, Pass::Infer)?)?;
        let group = ParamGroup { name: "blocks".into(), vars, lr_scale: BLOCK_LR_RATIO, weight_decay: Some(0.0) };
        let support = SupportBlocks { view: &view, rows: &ep.support, group };
        let objective =
            Classification::new(support, standardizer, &ep.support_labels, ep.ways.len(), cfg.kind, cfg.seed)?;
        let backbone = serde_json::json!({ "decoder_blocks": [range.start, range.end] });
        let quiet = RunOutput { dir: None, on_event: &mut |_| {} };
        fit_classifier(&objective, &cfg, backbone, quiet)?
    };
    Ok(TunedDecoder { model, head, losses })
}

/// An episode's support features from decoder blocks that train.
struct SupportBlocks<'a, 'm> {
    view: &'a AdaptedBlocks<'m>,
    /// The support texts' rows in the dataset, in the order of the head's examples.
    rows: &'a [usize],
    group: ParamGroup,
}

impl PooledFeatures for SupportBlocks<'_, '_> {
    fn pooled(&self, rows: &[usize]) -> Result<Tensor> {
        self.view.features(&rows.iter().map(|&r| self.rows[r]).collect::<Vec<_>>(), Pass::Train)
    }

    fn param_group(&self) -> Option<ParamGroup> {
        Some(self.group.clone())
    }

    fn grad_sink(&self) -> Option<Arc<GradSink>> {
        self.view.model().grad_sink()
    }
}

/// Share of `ep`'s queries whose predicted way is their label.
fn query_accuracy(pred: &[usize], ep: &Episode) -> f64 {
    pred.iter().zip(&ep.query_labels).filter(|(p, l)| p == l).count() as f64 / ep.query.len() as f64
}

/// Scores `learner` on episodes `0..n` of `sampler`, reporting `(done, n)` after each: the
/// episodes `log` already holds are taken from it, every other score is recorded in it as it is
/// made.
pub fn score_episodes(
    sampler: &EpisodeSampler,
    n: usize,
    mut learner: impl FnMut(&Episode) -> Result<f64>,
    log: &mut ScoreLog,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    for i in log.done().len()..n {
        let accuracy = learner(&sampler.episode(i as u64))?;
        log.record(i, accuracy)?;
        progress(i + 1, n);
    }
    Ok(log.done()[..n].to_vec())
}
