//! The techniques that use the decoder as a language model: zero- and few-shot prompting, and
//! the fine-tunings (soft prompt, prefix, LoRA, full, from scratch) run by the shared trainer on
//! the task phrased as chat instructions. All of them are scored by label scoring.

use super::config::Technique;
use super::Context;
use crate::config::{AdapterKind, ModelInit, TrainConfig};
use crate::data::DataFormat;
use crate::datasets::tweets::{Tweet, LABELS};
use crate::device::{parse_device, parse_dtype};
use crate::models::llama::{LoadOptions, WeightFormat};
use crate::models::load::load_causal_lm;
use crate::prompting::{self, PromptTemplate, Shot};
use crate::recipes::finetune::{self, Event};
use crate::report::{LossPoint, TechniqueResult};
use crate::train::schedule::ScheduleKind;
use crate::Result;
use std::path::Path;
use std::time::Instant;

/// Writes `tweets` as training rows in `format`: chat conversations (instruction, then the label
/// as the answer), or plain prompts and labels for a model without a chat template.
pub(super) fn write_task_jsonl(
    path: &Path,
    template: &PromptTemplate,
    format: DataFormat,
    tweets: &[Tweet],
) -> Result<()> {
    let rows = tweets.iter().map(|t| (t.text.as_str(), LABELS[t.label]));
    prompting::write_training_jsonl_for(path, template, format, rows)
}

/// Zero-shot (the instruction alone) or few-shot (after k solved train examples).
pub(super) fn prompting(ctx: &Context, t: Technique, train: &[Tweet]) -> Result<TechniqueResult> {
    let cfg = ctx.cfg;
    let opts = LoadOptions {
        device: parse_device(&cfg.model.device)?,
        dtype: parse_dtype(&cfg.model.dtype)?,
        format: WeightFormat::Dense,
    };
    let model = load_causal_lm(&ctx.source, &opts)?;
    let shots: Vec<Shot> = match t {
        Technique::FewShot => {
            let labels: Vec<usize> = train.iter().map(|x| x.label).collect();
            prompting::draw_shots(&labels, cfg.few_shot.k, cfg.task.seed)
                .into_iter()
                .map(|i| Shot { text: train[i].text.clone(), label: LABELS[train[i].label].into() })
                .collect()
        }
        _ => Vec::new(),
    };
    let started = Instant::now();
    let calibrate = t == Technique::FewShot && cfg.few_shot.calibrate;
    let pred = if calibrate {
        prompting::classify_calibrated(&model, &ctx.tok, &cfg.prompt, &shots, &ctx.test_texts(), &LABELS)?
    } else {
        prompting::classify(&model, &ctx.tok, &cfg.prompt, &shots, &ctx.test_texts(), &LABELS)?
    };
    let scores = ctx.score(&pred);
    let description = match t {
        Technique::FewShot => format!(
            "{}-shot chat prompt (examples from the train split, classes taking turns), label scoring{}",
            shots.len(),
            if calibrate { ", contextual calibration" } else { "" }
        ),
        _ => "chat prompt with the instruction only, label scoring".into(),
    };
    Ok(TechniqueResult {
        technique: t.name().into(),
        description,
        accuracy: scores.accuracy,
        macro_f1: scores.macro_f1,
        trainable_params: 0,
        train_time_s: 0.0,
        eval_time_s: started.elapsed().as_secs_f64(),
        peak_rss_mb: None,
        losses: Vec::new(),
    })
}

/// The training run of technique `t` on the train file, held-out loss on the test file.
fn train_config(ctx: &Context, t: Technique, train_jsonl: &Path, dir: &Path) -> TrainConfig {
    let c = ctx.cfg;
    let mut cfg = TrainConfig::default();
    cfg.model.name = c.model.name.clone();
    cfg.model.device = c.model.device.clone();
    cfg.model.dtype = c.model.dtype.clone();
    cfg.adapter.r = c.train.r;
    cfg.adapter.alpha = c.train.alpha;
    cfg.adapter.num_virtual_tokens = c.train.num_virtual_tokens;
    let (kind, lr) = match t {
        Technique::SoftPrompt => (AdapterKind::PromptTuning, c.train.lr.soft_prompt),
        Technique::Prefix => (AdapterKind::PrefixTuning, c.train.lr.prefix),
        Technique::Full => (AdapterKind::None, c.train.lr.full),
        Technique::Scratch => (AdapterKind::None, c.train.lr.scratch),
        _ => (AdapterKind::Lora, c.train.lr.lora),
    };
    cfg.adapter.kind = kind;
    if t == Technique::SoftPrompt && !c.prompt.system.is_empty() {
        // PEFT's TEXT initialisation from the task description.
        cfg.adapter.prompt_init_text = Some(c.prompt.system.clone());
    }
    if t == Technique::Scratch {
        cfg.model.init = ModelInit::Random;
    }
    cfg.data.train = train_jsonl.to_path_buf();
    cfg.data.eval = Some(ctx.test_jsonl.clone());
    cfg.data.format = prompting::training_format(&ctx.tok);
    cfg.data.seq_len = c.train.seq_len;
    cfg.train.max_steps = Some(c.train.steps);
    cfg.train.batch_size = c.train.batch_size;
    cfg.train.lr = lr;
    cfg.train.schedule = ScheduleKind::Cosine;
    cfg.train.warmup_steps = c.train.warmup_steps.min(c.train.steps.saturating_sub(1));
    cfg.train.seed = c.task.seed;
    cfg.train.eval_batches = c.train.eval_batches;
    cfg.train.gradient_checkpointing = c.train.gradient_checkpointing;
    cfg.output.dir = dir.to_path_buf();
    cfg
}

fn describe(t: Technique, cfg: &TrainConfig) -> String {
    let budget = format!(
        "{} steps x {} examples, lr {:e}",
        cfg.train.max_steps.unwrap_or(0),
        cfg.train.batch_size,
        cfg.train.lr
    );
    match t {
        Technique::SoftPrompt => {
            format!("soft prompt of {} virtual tokens, model frozen; {budget}", cfg.adapter.num_virtual_tokens)
        }
        Technique::Prefix => format!(
            "key/value prefix of {} virtual tokens per layer, model frozen; {budget}",
            cfg.adapter.num_virtual_tokens
        ),
        Technique::Full => format!("every weight trains; {budget}"),
        Technique::Scratch => format!("same architecture from random weights, every weight trains; {budget}"),
        _ => format!(
            "LoRA r={} alpha={} on {}; {budget}",
            cfg.adapter.r,
            cfg.adapter.alpha,
            cfg.adapter.targets.join(",")
        ),
    }
}

/// Trains with technique `t` on `train` (as chat instructions), then scores the trained model.
pub(super) fn fine_tune(
    ctx: &Context,
    t: Technique,
    train: &[Tweet],
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<TechniqueResult> {
    let train_jsonl = dir.join("data").join("train.jsonl");
    write_task_jsonl(&train_jsonl, &ctx.cfg.prompt, prompting::training_format(&ctx.tok), train)?;
    let cfg = train_config(ctx, t, &train_jsonl, dir);
    let mut losses = Vec::new();
    let (summary, model) = finetune::run_keeping_model(&cfg, false, &mut |e| {
        if let Event::Step(r) = &e {
            losses.push(LossPoint { step: r.step, loss: r.loss });
        }
        on_event(e);
    })?;
    let started = Instant::now();
    let pred = prompting::classify(&model, &ctx.tok, &ctx.cfg.prompt, &[], &ctx.test_texts(), &LABELS)?;
    let scores = ctx.score(&pred);
    Ok(TechniqueResult {
        technique: t.name().into(),
        description: describe(t, &cfg),
        accuracy: scores.accuracy,
        macro_f1: scores.macro_f1,
        trainable_params: summary.trainable_params,
        train_time_s: summary.wall_time_s,
        eval_time_s: started.elapsed().as_secs_f64(),
        peak_rss_mb: None,
        losses,
    })
}
