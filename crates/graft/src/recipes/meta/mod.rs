//! `graft meta CONFIG.toml`: few-shot learning on episodes (docs/meta-learning.md). The
//! dataset's texts or images go once through the frozen backbone (features kept in a file
//! between runs), the classes are dealt into meta-train / meta-validation / meta-test, a
//! prototypical network, ANIL, the enabled MAML family and (with a decoder) a LoRA prototypical
//! network and ANIL inside it are meta-trained on meta-train episodes (the one trainer:
//! checkpoints, exact resume), and every learner — the frozen-feature baselines and the
//! meta-trained ones — is scored on the same meta-test episodes (each score kept as it is made,
//! so scoring resumes too): mean accuracy with a 95 % confidence interval. The summary goes to
//! `summary.json`.

pub mod config;
pub mod data;

use crate::assets::resolve_model;
use crate::device::{parse_device, parse_dtype};
use crate::features::head::{RunOutput, Standardizer};
use crate::meta::evaluate::{
    fine_tuned_decoder, fine_tuned_encoder, fine_tuned_image_backbone, linear_head, nearest_centroid,
    protonet_accuracy, score_episodes, select_rows,
};
use crate::meta::lora_anil::fit_lora_anil;
use crate::meta::lora_maml::fit_lora_maml;
use crate::meta::lora_protonet::{fit_lora_protonet, AdaptedBlocks, DecoderTexts};
use crate::meta::score_log::ScoreLog;
use crate::meta::{
    fit_anil, fit_maml, fit_protonet, split_classes, Accuracy, ClassMembers, ClassSplits, EpisodeSampler, EpisodeShape,
};
use crate::models::bert::SentenceEncoder;
use crate::models::efficientnet::LITE0_UNITS;
use crate::models::llama::{LoadOptions, WeightFormat};
use crate::models::load::load_causal_lm;
use crate::tokenizer::Tokenizer;
use crate::train::{Event, Outcome, RunDir};
use crate::vision::classifier::ImageInput;
use crate::vision::preprocess::Preprocess;
use crate::Result;
use config::MetaConfig;
use data::{cached_features, decoder_tokens, load_dataset, FeatureBackbone, MetaInputs};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// What a `graft meta` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaSummary {
    /// The episode shape.
    pub shape: EpisodeShape,
    /// The frozen encoder.
    pub encoder: String,
    /// Examples with a class.
    pub examples: usize,
    /// The classes of each split with their sizes.
    pub classes: SplitSizes,
    /// Seconds spent embedding (0 when the embeddings were read from `output.features`).
    pub embed_s: f64,
    /// Whether the embeddings were read from `output.features`.
    pub features_cached: bool,
    /// The prototypical network's meta-training.
    pub meta_train: MetaTrainSummary,
    /// ANIL's meta-training, when `anil.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anil_train: Option<MetaTrainSummary>,
    /// First-order MAML's meta-training, when `fomaml.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fomaml_train: Option<MetaTrainSummary>,
    /// MAML's meta-training, when `maml.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maml_train: Option<MetaTrainSummary>,
    /// Reptile's meta-training, when `reptile.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reptile_train: Option<MetaTrainSummary>,
    /// The LoRA prototypical network's meta-training, when `lora_protonet.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_protonet_train: Option<MetaTrainSummary>,
    /// ANIL inside the decoder's meta-training, when `lora_anil.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_anil_train: Option<MetaTrainSummary>,
    /// First-order MAML inside the decoder's meta-training, when `lora_fomaml.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_fomaml_train: Option<MetaTrainSummary>,
    /// MAML inside the decoder's meta-training, when `lora_maml.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_maml_train: Option<MetaTrainSummary>,
    /// Reptile inside the decoder's meta-training, when `lora_reptile.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_reptile_train: Option<MetaTrainSummary>,
    /// Every learner's meta-test accuracy, baselines first.
    pub results: Vec<LearnerResult>,
}

/// Class names and sizes per split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSizes {
    /// Meta-train classes: `(name, examples)`.
    pub train: Vec<(String, usize)>,
    /// Meta-validation classes.
    pub val: Vec<(String, usize)>,
    /// Meta-test classes.
    pub test: Vec<(String, usize)>,
}

/// A meta-training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaTrainSummary {
    /// Optimizer steps.
    pub steps: u64,
    /// Episodes trained on.
    pub episodes: u64,
    /// Training wall time in seconds (summed over resumed parts).
    pub wall_time_s: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Mean ProtoNet loss per query on the meta-validation episodes before training.
    pub base_val_loss: Option<f64>,
    /// The same after training.
    pub final_val_loss: Option<f64>,
    /// The run folder (checkpoints, `metrics.jsonl`).
    pub run: PathBuf,
}

/// One learner's meta-test score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerResult {
    /// `nearest_centroid`, `linear_head`, `fine_tuned_encoder`, `protonet`, `anil`, `fomaml`,
    /// `maml`, `reptile`, `lora_protonet`, `lora_anil`, `lora_fomaml`, `lora_maml` or
    /// `lora_reptile`.
    pub learner: String,
    /// Whether it is meta-trained (false: a baseline on the frozen features).
    pub meta_trained: bool,
    /// Mean query accuracy with its 95 % interval.
    pub accuracy: Accuracy,
    /// Seconds spent adapting to and scoring the meta-test episodes in this run (episodes read
    /// back from `scores/` on a resume cost nothing).
    pub eval_s: f64,
}

/// The summary of a meta-training run kept in `run`.
fn train_summary(outcome: &Outcome, run: PathBuf) -> MetaTrainSummary {
    MetaTrainSummary {
        steps: outcome.state.step,
        episodes: outcome.state.micro_batches_done,
        wall_time_s: outcome.state.elapsed_s,
        trainable_params: outcome.trainable_params,
        base_val_loss: outcome.state.base_eval_loss,
        final_val_loss: outcome.final_eval_loss,
        run,
    }
}

fn sizes(c: &ClassMembers) -> Vec<(String, usize)> {
    c.iter().map(|(n, m)| (n.clone(), m.len())).collect()
}

/// What `graft validate` reports of a meta config: the dataset and its class splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaCheck {
    /// Examples with a class.
    pub examples: usize,
    /// The classes of each split with their sizes.
    pub classes: SplitSizes,
    /// A one-line description.
    pub note: String,
}

/// The dataset, its class splits and the episode samplers of a run.
struct Prepared {
    inputs: MetaInputs,
    note: String,
    splits: ClassSplits,
    train: EpisodeSampler,
    val: Option<EpisodeSampler>,
    test: EpisodeSampler,
}

/// Reads the dataset, deals its classes and builds the samplers: every data error (a split
/// too small for `n_way`, a class too small for `k_shot + q_query`) shows here, before anything
/// is embedded.
fn prepare(cfg: &MetaConfig) -> Result<Prepared> {
    cfg.validate()?;
    let data = load_dataset(&cfg.data, cfg.backbone.offline)?;
    let splits = split_classes(data.classes, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)?;
    let shape = cfg.episodes.shape();
    let seed = cfg.episodes.seed;
    let train = EpisodeSampler::new("meta-train", splits.train.clone(), shape, seed)?;
    let test = EpisodeSampler::new("meta-test", splits.test.clone(), shape, seed.wrapping_add(2))?;
    let val = if cfg.protonet.val_episodes > 0 && !splits.val.is_empty() {
        Some(EpisodeSampler::new("meta-val", splits.val.clone(), shape, seed.wrapping_add(1))?)
    } else {
        None
    };
    Ok(Prepared { inputs: data.inputs, note: data.note, splits, train, val, test })
}

fn split_sizes(s: &ClassSplits) -> SplitSizes {
    SplitSizes { train: sizes(&s.train), val: sizes(&s.val), test: sizes(&s.test) }
}

/// Checks a config without embedding or training: the dataset reads, its classes split and
/// every split can give episodes of the configured shape.
pub fn check(cfg: &MetaConfig) -> Result<MetaCheck> {
    let p = prepare(cfg)?;
    let classes = split_sizes(&p.splits);
    let note = format!(
        "{}; {} / {} / {} classes for meta-train / val / test",
        p.note,
        classes.train.len(),
        classes.val.len(),
        classes.test.len()
    );
    Ok(MetaCheck { examples: p.inputs.len(), classes, note })
}

/// Runs the config (`resume`: continue the meta-training from its newest checkpoint).
pub fn run(cfg: &MetaConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<MetaSummary> {
    let Prepared { inputs, note, splits, train, val, test } = prepare(cfg)?;
    on_event(Event::Note(note));
    let out = &cfg.output.dir;
    let shape = cfg.episodes.shape();
    on_event(Event::Note(format!(
        "{} / {} / {} classes for meta-train / val / test; {}-way {}-shot {}-query",
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        shape.n_way,
        shape.k_shot,
        shape.q_query
    )));
    let b = &cfg.backbone;
    let device = parse_device(&b.device)?;
    let features_path = cfg.output.features.clone().unwrap_or_else(|| out.join("features.safetensors"));
    let t0 = Instant::now();
    let dtype = parse_dtype(&b.dtype)?;
    let size = if matches!(inputs, MetaInputs::Images(_)) { cfg.data.image_size } else { 0 };
    let load = || {
        on_event(Event::Note(format!("computing features of {} {} with `{}`", inputs.len(), inputs.kind(), b.encoder)));
        Ok(match &inputs {
            MetaInputs::Texts(_) if cfg.decoder.is_some() => {
                let (model, tokenizer) = load_decoder(b, &device, dtype)?;
                FeatureBackbone::Decoder(
                    Box::new(model),
                    Box::new(tokenizer),
                    cfg.decoder.clone().unwrap_or_default(),
                    b.batch_size,
                )
            }
            MetaInputs::Texts(_) => FeatureBackbone::Text(
                Box::new(SentenceEncoder::load(&resolve_model(&b.encoder, b.offline)?, &device, dtype)?),
                b.batch_size,
            ),
            MetaInputs::Images(_) => {
                let model = crate::recipes::image_train::load_backbone(&b.encoder, b.offline, &device, dtype)?;
                FeatureBackbone::Image(Box::new(model), image_input(cfg))
            }
        })
    };
    let key = match &cfg.decoder {
        Some(d) => format!("{} ({})", b.encoder, d.describe()),
        None => b.encoder.clone(),
    };
    let (features, cached) = cached_features(&features_path, (&key, &b.dtype, size), &inputs, &device, load)?;
    // Sentence embeddings come unit-length; image and decoder features are scaled to unit length
    // too, so that every learner's settings (distance scale, inner learning rate) mean the same.
    let features = match inputs {
        MetaInputs::Texts(_) if cfg.decoder.is_none() => features,
        _ => crate::models::bert::l2_normalize(&features)?,
    };
    let embed_s = if cached { 0.0 } else { t0.elapsed().as_secs_f64() };
    if cached {
        on_event(Event::Note(format!("embeddings read from {}", features_path.display())));
    }

    let run_path = out.join("protonet");
    let settings = serde_json::json!({
        "data": cfg.data, "episodes": cfg.episodes, "encoder": b.encoder, "dtype": b.dtype,
        "examples": inputs.len(), "train_classes": sizes(&splits.train),
    });
    let dir = RunDir::open(&run_path, resume, cfg.protonet.save_every)?;
    let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
    let (projection, outcome) = fit_protonet(&features, &train, val.as_ref(), &cfg.protonet, &settings, output)?;
    let meta_train = train_summary(&outcome, run_path);
    let anil = if cfg.anil.enabled {
        let run_path = out.join("anil");
        let dir = RunDir::open(&run_path, resume, cfg.anil.train.save_every)?;
        let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
        let (model, outcome) =
            fit_anil(&features, &train, val.as_ref(), &cfg.anil.train, &cfg.anil.inner, &settings, output)?;
        Some((model, train_summary(&outcome, run_path)))
    } else {
        None
    };
    let mut maml_runs = Vec::new();
    for (name, section, update) in cfg.maml_learners() {
        if !section.enabled {
            continue;
        }
        let run_path = out.join(name);
        let dir = RunDir::open(&run_path, resume, section.train.save_every)?;
        let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
        let (model, outcome) =
            fit_maml(&features, &train, val.as_ref(), &section.train, &section.inner, update, &settings, output)?;
        maml_runs.push((name, model, train_summary(&outcome, run_path)));
    }
    let any_lora_maml = cfg.lora_maml_learners().iter().any(|(_, section, _)| section.enabled);
    let (lora, lora_anil, lora_maml_runs) = match (&cfg.decoder, &inputs) {
        (Some(how), MetaInputs::Texts(texts))
            if cfg.lora_protonet.enabled || cfg.lora_anil.enabled || any_lora_maml =>
        {
            let (mut model, tokenizer) = load_decoder(b, &device, dtype)?;
            let seqs = decoder_tokens(&tokenizer, texts, how.max_tokens)?;
            // Learners whose adapters start at the same block share the states below it.
            let shared = DecoderTexts::new(&seqs, b.batch_size);
            let reading = (how.layer, how.pooling);
            let protonet = if cfg.lora_protonet.enabled {
                let run_path = out.join("lora_protonet");
                let dir = RunDir::open(&run_path, resume, cfg.lora_protonet.train.save_every)?;
                let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
                let (adapted, outcome) = fit_lora_protonet(
                    &mut model,
                    &shared,
                    reading,
                    &train,
                    val.as_ref(),
                    &cfg.lora_protonet,
                    &settings,
                    output,
                )?;
                // The next learner starts from the base decoder.
                crate::adapters::lora::unload(&mut model);
                Some((adapted, train_summary(&outcome, run_path)))
            } else {
                None
            };
            let anil = if cfg.lora_anil.enabled {
                let run_path = out.join("lora_anil");
                let dir = RunDir::open(&run_path, resume, cfg.lora_anil.train.save_every)?;
                let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
                let (adapted, outcome) = fit_lora_anil(
                    &mut model,
                    &shared,
                    reading,
                    &train,
                    val.as_ref(),
                    &cfg.lora_anil,
                    &settings,
                    output,
                )?;
                crate::adapters::lora::unload(&mut model);
                Some((adapted, train_summary(&outcome, run_path)))
            } else {
                None
            };
            let mut runs = Vec::new();
            for (name, section, update) in cfg.lora_maml_learners() {
                if !section.enabled {
                    continue;
                }
                let run_path = out.join(name);
                let dir = RunDir::open(&run_path, resume, section.train.save_every)?;
                let output = RunOutput { dir: Some(dir), on_event: &mut *on_event };
                let (adapted, outcome) = fit_lora_maml(
                    &mut model,
                    &shared,
                    reading,
                    &train,
                    val.as_ref(),
                    section,
                    (name, update),
                    &settings,
                    output,
                )?;
                crate::adapters::lora::unload(&mut model);
                runs.push((name, adapted, train_summary(&outcome, run_path)));
            }
            (protonet, anil, runs)
        }
        _ => (None, None, Vec::new()),
    };

    let n = cfg.eval.episodes;
    let score_settings = scoring_settings(cfg)?;
    let mut results = Vec::new();
    let mut score = |name: &str,
                     meta_trained: bool,
                     n: usize,
                     learner: &mut dyn FnMut(&crate::meta::Episode) -> Result<f64>| {
        on_event(Event::Note(format!("scoring `{name}` on {n} meta-test episodes")));
        let t = Instant::now();
        let log_path = out.join("scores").join(format!("{name}.jsonl"));
        let mut log = ScoreLog::open(&log_path, &score_settings, resume)?;
        if log.stale() {
            on_event(Event::Note(format!("  {name}: scores in {} were made with other settings", log_path.display())));
        }
        if !log.done().is_empty() {
            let read = log.done().len().min(n);
            on_event(Event::Note(format!("  {name}: {read} episodes read back from {}", log_path.display())));
        }
        let mut progress = |done: usize, total: usize| {
            if done.is_multiple_of(100) && done < total {
                on_event(Event::Note(format!("  {name}: {done}/{total} episodes")));
            }
        };
        let accs = score_episodes(&test, n, learner, &mut log, &mut progress)?;
        let accuracy = Accuracy::of(&accs)?;
        on_event(Event::Note(format!("  {name}: {:.2} % ± {:.2}", 100.0 * accuracy.mean, 100.0 * accuracy.ci95)));
        results.push(LearnerResult { learner: name.into(), meta_trained, accuracy, eval_s: t.elapsed().as_secs_f64() });
        Ok::<(), crate::GraftError>(())
    };
    score("nearest_centroid", false, n, &mut |ep| nearest_centroid(&features, ep))?;
    if cfg.baselines.linear_head {
        let train_rows: Vec<usize> = splits.train.iter().flat_map(|(_, m)| m.iter().copied()).collect();
        let standardizer = Standardizer::fit(&select_rows(&features, &train_rows)?)?;
        let head = &cfg.baselines.head;
        score("linear_head", false, n, &mut |ep| linear_head(&features, &standardizer, head, ep))?;
    }
    if cfg.baselines.fine_tune {
        let bl = &cfg.baselines;
        let episodes = match bl.fine_tune_episodes {
            0 => n,
            k => k.min(n),
        };
        match (&inputs, &cfg.decoder) {
            (MetaInputs::Texts(texts), Some(how)) => {
                let (model, tokenizer) = load_decoder(b, &device, dtype)?;
                let seqs = decoder_tokens(&tokenizer, texts, how.max_tokens)?;
                let below = how.layer.unwrap_or(model.config().num_hidden_layers);
                let layers = bl.fine_tune_layers.unwrap_or(below);
                if layers > below {
                    return Err(crate::GraftError::Input(format!(
                        "baselines.fine_tune_layers = {layers}: only {below} decoder blocks lie below the feature layer"
                    )));
                }
                let blocks = AdaptedBlocks::new(&model, &seqs, how.layer, layers, how.pooling, b.batch_size)?;
                let mut learner = |ep: &crate::meta::Episode| fine_tuned_decoder(&blocks, &bl.fine_tune_head, ep);
                score("fine_tuned_encoder", false, episodes, &mut learner)?;
            }
            (MetaInputs::Texts(texts), None) => {
                let encoder = SentenceEncoder::load(&resolve_model(&b.encoder, b.offline)?, &device, dtype)?;
                let layers = bl.fine_tune_layers.unwrap_or(encoder.model().config().num_hidden_layers);
                let mut learner =
                    |ep: &crate::meta::Episode| fine_tuned_encoder(&encoder, texts, layers, &bl.fine_tune_head, ep);
                score("fine_tuned_encoder", false, episodes, &mut learner)?;
            }
            (MetaInputs::Images(images), _) => {
                let model = crate::recipes::image_train::load_backbone(&b.encoder, b.offline, &device, dtype)?;
                let (units, input) = (bl.fine_tune_layers.unwrap_or(LITE0_UNITS), image_input(cfg));
                let mut learner = |ep: &crate::meta::Episode| {
                    fine_tuned_image_backbone(&model, images, units, &bl.fine_tune_head, &input, ep)
                };
                score("fine_tuned_encoder", false, episodes, &mut learner)?;
            }
        }
    }
    score("protonet", true, n, &mut |ep| protonet_accuracy(&features, &projection, ep))?;
    if let Some((model, _)) = &anil {
        score("anil", true, n, &mut |ep| model.accuracy(&features, ep))?;
    }
    for (name, model, _) in &maml_runs {
        score(name, true, n, &mut |ep| model.accuracy(&features, ep))?;
    }
    if let Some((adapted, _)) = &lora {
        score("lora_protonet", true, n, &mut |ep| nearest_centroid(adapted, ep))?;
    }
    if let Some((adapted, _)) = &lora_anil {
        score("lora_anil", true, n, &mut |ep| adapted.accuracy(ep))?;
    }
    for (name, adapted, _) in &lora_maml_runs {
        score(name, true, n, &mut |ep| adapted.accuracy(ep))?;
    }
    let maml_train = |learner: &str| maml_runs.iter().find(|r| r.0 == learner).map(|r| r.2.clone());
    let lora_maml_train = |learner: &str| lora_maml_runs.iter().find(|r| r.0 == learner).map(|r| r.2.clone());

    let summary = MetaSummary {
        shape,
        encoder: b.encoder.clone(),
        examples: inputs.len(),
        classes: split_sizes(&splits),
        embed_s,
        features_cached: cached,
        meta_train,
        anil_train: anil.map(|(_, s)| s),
        fomaml_train: maml_train("fomaml"),
        maml_train: maml_train("maml"),
        reptile_train: maml_train("reptile"),
        lora_protonet_train: lora.map(|(_, s)| s),
        lora_anil_train: lora_anil.map(|(_, s)| s),
        lora_fomaml_train: lora_maml_train("lora_fomaml"),
        lora_maml_train: lora_maml_train("lora_maml"),
        lora_reptile_train: lora_maml_train("lora_reptile"),
        results,
    };
    crate::io::write_atomic(&out.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

/// What every learner's meta-test scores depend on: the whole config but the number of
/// episodes scored (`eval`, `baselines.fine_tune_episodes`: a resumed run may score more) and
/// where the run writes (`output`).
fn scoring_settings(cfg: &MetaConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("eval");
        o.remove("output");
        if let Some(b) = o.get_mut("baselines").and_then(|b| b.as_object_mut()) {
            b.remove("fine_tune_episodes");
        }
    }
    Ok(v)
}

/// How a run's images become the image backbone's inputs: resized to `data.image_size`, grey to
/// three channels, ImageNet normalisation, no augmentation, `backbone.batch_size` per pass.
fn image_input(cfg: &MetaConfig) -> ImageInput {
    let size = cfg.data.image_size;
    let preprocess = Preprocess { resize: size, ..Preprocess::imagenet(size) };
    ImageInput { preprocess, augment: None, batch: cfg.backbone.batch_size }
}

/// The causal LM `backbone.encoder` names, dense in `dtype` on `device`, and its tokenizer.
fn load_decoder(
    b: &crate::recipes::progressive::BackboneConfig,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<(crate::models::llama::Llama, Tokenizer)> {
    let source = resolve_model(&b.encoder, b.offline)?;
    let opts = LoadOptions { device: device.clone(), dtype, format: WeightFormat::Dense };
    Ok((load_causal_lm(&source, &opts)?, Tokenizer::from_source(&source)?))
}

/// The results as a text table: learner, mean accuracy ± 95 % interval, episodes.
pub fn results_table(s: &MetaSummary) -> String {
    let mut out = format!(
        "{}-way {}-shot, {} query per class\n{:<18} {:>10} {:>8} {:>9}",
        s.shape.n_way, s.shape.k_shot, s.shape.q_query, "learner", "accuracy", "± 95%", "episodes"
    );
    for r in &s.results {
        out += &format!(
            "\n{:<18} {:>9.2}% {:>7.2}% {:>9}",
            r.learner,
            100.0 * r.accuracy.mean,
            100.0 * r.accuracy.ci95,
            r.accuracy.episodes
        );
    }
    out
}
