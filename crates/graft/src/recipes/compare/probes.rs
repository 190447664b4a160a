//! Feature-extraction techniques: a classification head on a frozen backbone's features — the
//! decoder's states for the chat prompt (`linear_probe`), the same with the top decoder blocks
//! trained too (`decoder_head`), or an encoder's sentence embeddings (`encoder_probe`). Each
//! trains on the shared trainer with its `metrics.jsonl` in the technique's folder.

use super::config::Technique;
use super::Context;
use crate::assets::resolve_model;
use crate::datasets::tweets::{Tweet, LABELS};
use crate::device::{parse_device, parse_dtype};
use crate::features::tune::BLOCK_LR_RATIO;
use crate::features::{
    decoder_features, encoder_features, fit_decoder_classifier, fit_head, DecoderTuning, HeadKind, RunOutput,
};
use crate::models::bert::SentenceEncoder;
use crate::models::llama::{LoadOptions, WeightFormat};
use crate::models::load::load_causal_lm;
use crate::recipes::finetune::Event;
use crate::report::{LossPoint, TechniqueResult};
use crate::train::RunDir;
use crate::{GraftError, Result};
use std::path::Path;
use std::time::Instant;

/// Feature batches (sequences per forward).
const BATCH: usize = 16;

/// What one probe produced, before scoring.
struct Probed {
    pred: Vec<usize>,
    trainable: usize,
    description: String,
    train_s: f64,
    eval_s: f64,
    losses: Vec<LossPoint>,
}

fn head_name(kind: HeadKind) -> String {
    match kind {
        HeadKind::Linear => "linear head".into(),
        HeadKind::Mlp { hidden } => format!("MLP head ({hidden} hidden)"),
    }
}

/// Runs `linear_probe`, `decoder_head` or `encoder_probe` on `train`, scores it on the held-out
/// set, and saves the head in `dir`.
pub(super) fn run(
    ctx: &Context,
    t: Technique,
    train: &[Tweet],
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<TechniqueResult> {
    let labels: Vec<usize> = train.iter().map(|x| x.label).collect();
    let texts: Vec<String> = train.iter().map(|x| x.text.clone()).collect();
    let p = match t {
        Technique::EncoderProbe => encoder_probe(ctx, &texts, &labels, dir, on_event)?,
        Technique::LinearProbe | Technique::DecoderHead => decoder_probe(ctx, t, &texts, &labels, dir, on_event)?,
        other => return Err(GraftError::Input(format!("`{}` is not a feature-extraction technique", other.name()))),
    };
    let scores = ctx.score(&p.pred);
    Ok(TechniqueResult {
        technique: t.name().into(),
        description: p.description,
        accuracy: scores.accuracy,
        macro_f1: scores.macro_f1,
        trainable_params: p.trainable,
        train_time_s: p.train_s,
        eval_time_s: p.eval_s,
        peak_rss_mb: None,
        losses: p.losses,
    })
}

/// A fresh run in `dir` (its `metrics.jsonl`; the checkpoint is dropped once the head is saved).
fn run_output<'a>(dir: &Path, on_event: &'a mut dyn FnMut(Event)) -> Result<RunOutput<'a>> {
    Ok(RunOutput { dir: Some(RunDir::open(dir, false, 0)?), on_event })
}

fn budget(ctx: &Context) -> String {
    let h = &ctx.cfg.probe.head;
    format!("{}, {} epochs, lr {:e}", head_name(h.kind), h.epochs, h.lr)
}

fn encoder_probe(
    ctx: &Context,
    texts: &[String],
    labels: &[usize],
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Probed> {
    let c = ctx.cfg;
    on_event(Event::Note(format!("encoding tweets with `{}`", c.probe.encoder)));
    let enc = SentenceEncoder::load(
        &resolve_model(&c.probe.encoder, false)?,
        &parse_device(&c.model.device)?,
        parse_dtype(&c.model.dtype)?,
    )?;
    let t0 = Instant::now();
    let feats = encoder_features(&enc, texts, BATCH)?;
    let (head, losses) = fit_head(&feats, labels, LABELS.len(), &c.probe.head, run_output(dir, on_event)?)?;
    let train_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let pred = head.predict(&encoder_features(&enc, &ctx.test_texts(), BATCH)?)?;
    let eval_s = t1.elapsed().as_secs_f64();
    head.save(&dir.join("head.safetensors"))?;
    Ok(Probed {
        pred,
        trainable: head.trainable_params(),
        description: format!(
            "{} on frozen `{}` sentence embeddings (mean-pooled, L2-normalised)",
            budget(ctx),
            c.probe.encoder
        ),
        train_s,
        eval_s,
        losses,
    })
}

fn decoder_probe(
    ctx: &Context,
    t: Technique,
    texts: &[String],
    labels: &[usize],
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Probed> {
    let c = ctx.cfg;
    let p = &c.probe;
    let opts = LoadOptions {
        device: parse_device(&c.model.device)?,
        dtype: parse_dtype(&c.model.dtype)?,
        format: WeightFormat::Dense,
    };
    let mut model = load_causal_lm(&ctx.source, &opts)?;
    let prompts = |texts: &[String]| -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|x| c.prompt.prompt_ids(&ctx.tok, &[], x)).collect()
    };
    let (train_ids, test_ids) = (prompts(texts)?, prompts(&ctx.test_texts())?);
    let pooling = format!("{:?} pooling of the chat prompt", p.pooling).to_lowercase();
    let t0 = Instant::now();
    if t == Technique::LinearProbe {
        on_event(Event::Note("extracting frozen decoder features".into()));
        let feats = decoder_features(&model, &train_ids, p.layer, p.pooling, BATCH)?;
        let (head, losses) = fit_head(&feats, labels, LABELS.len(), &p.head, run_output(dir, on_event)?)?;
        let train_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let pred = head.predict(&decoder_features(&model, &test_ids, p.layer, p.pooling, BATCH)?)?;
        let eval_s = t1.elapsed().as_secs_f64();
        head.save(&dir.join("head.safetensors"))?;
        let layer = p.layer.map_or("the final norm".to_string(), |l| format!("{l} blocks"));
        let description = format!("{} on frozen decoder states after {layer} ({pooling})", budget(ctx));
        return Ok(Probed { pred, trainable: head.trainable_params(), description, train_s, eval_s, losses });
    }
    on_event(Event::Note(format!("training a classification head with the top {} decoder blocks", p.unfreeze_top)));
    let tuning =
        DecoderTuning { unfreeze_top: p.unfreeze_top, pooling: p.pooling, block_lr: p.head.lr * BLOCK_LR_RATIO };
    let out = run_output(dir, on_event)?;
    let (clf, losses) = fit_decoder_classifier(&mut model, &train_ids, labels, LABELS.len(), tuning, &p.head, out)?;
    let train_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let pred = clf.predict(&model, &test_ids, BATCH)?;
    let eval_s = t1.elapsed().as_secs_f64();
    let description = format!(
        "{} with the top {} decoder blocks and the final norm trained ({pooling})",
        budget(ctx),
        p.unfreeze_top
    );
    Ok(Probed { pred, trainable: clf.trainable_params(), description, train_s, eval_s, losses })
}
