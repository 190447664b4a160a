//! Distillation recipe (`graft distill`): load the teacher (inference path, no gradients, its
//! adapter attached), check it shares the student's tokenizer (or hand a `uld` run to
//! `distill_cross`, across tokenizers), then train the student exactly as
//! fine-tuning does — same run directory, checkpoints, exact resume, metrics and summary — with
//! the distillation objective in place of the causal-LM one. With `distill.teacher_cache` the
//! teacher's top-k distributions come from the cache (`distill_fill`) instead; with
//! `distill.on_policy` a share of the steps trains on the student's own samples
//! ([`on_policy_settings`]).

use super::finetune::{open_run_dir, train_with, write_summary, Summary};
use crate::assets::resolve_model;
use crate::config::distill::{DistillConfig, LossName};
use crate::device::{parse_device, parse_dtype};
use crate::models::llama::{Llama, LoadOptions, WeightFormat};
use crate::models::load::load_causal_lm;
use crate::objectives::distillation::{vocab_mismatch, Distillation, CROSS_TOKENIZER_HINT};
use crate::objectives::distillation_cached::CachedDistillation;
use crate::objectives::hidden_match::HiddenMatch;
use crate::objectives::on_policy::OnPolicy;
use crate::tokenizer::Tokenizer;
use crate::train::Event;
use crate::{GraftError, Result};

/// The frozen teacher of a run.
pub struct Teacher {
    /// The model (adapter attached, if any).
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
}

/// How the teacher `cfg.teacher` describes is loaded: the student's device, its own precision.
pub fn teacher_load_options(cfg: &DistillConfig) -> Result<LoadOptions> {
    let t = &cfg.teacher;
    let format = if t.quantized { WeightFormat::Quantized } else { WeightFormat::Dense };
    let dtype = parse_dtype(t.dtype.as_deref().unwrap_or(&cfg.model.dtype))?;
    Ok(LoadOptions { device: parse_device(&cfg.model.device)?, dtype, format })
}

/// Loads the teacher `cfg.teacher` describes on the student's device.
pub fn load_teacher(cfg: &DistillConfig) -> Result<Teacher> {
    let t = &cfg.teacher;
    let source = resolve_model(&t.model, false)?;
    let tokenizer = Tokenizer::from_source(&source)?;
    let opts = teacher_load_options(cfg)?;
    let mut model = load_causal_lm(&source, &opts)?;
    if let Some(adapter) = &t.adapter {
        // Attached, not merged: it works over quantized weights too. The set itself is not
        // needed afterwards (the projections hold its factors; its dropout stays off).
        crate::io::adapter::load_adapter(adapter, &mut model)?;
    }
    Ok(Teacher { model, tokenizer })
}

/// Refuses a teacher whose tokenizer is not the student's: the same number of ids and the same
/// token behind every id, since logit distillation compares the distributions id by id.
pub fn check_same_tokenizer(teacher: &Tokenizer, student: &Tokenizer) -> Result<()> {
    let (t, s) = (teacher.vocab_size(), student.vocab_size());
    if t != s {
        return Err(vocab_mismatch(t, s));
    }
    if let Some(id) = (0..t as u32).find(|&id| teacher.id_to_token(id) != student.id_to_token(id)) {
        let show = |tok: &Tokenizer| tok.id_to_token(id).map_or("nothing".to_string(), |s| format!("{s:?}"));
        return Err(GraftError::Input(format!(
            "the teacher's and the student's tokenizers differ although both have {t} ids: id {id} is {} for the \
             teacher and {} for the student. Logit distillation needs one shared tokenizer; {}",
            show(teacher),
            show(student),
            CROSS_TOKENIZER_HINT
        )));
    }
    Ok(())
}

/// Checks that `teacher` and `student` tokenizers suit `cfg`'s loss: any two with
/// `distill.loss = "uld"`, one shared tokenizer otherwise ([`check_same_tokenizer`]).
pub fn check_tokenizers(cfg: &DistillConfig, teacher: &Tokenizer, student: &Tokenizer) -> Result<()> {
    match cfg.distill.loss {
        LossName::Uld => Ok(()),
        _ => check_same_tokenizer(teacher, student),
    }
}

/// Runs the distillation `cfg` describes; with `resume`, continues from the newest good
/// checkpoint in `cfg.output.dir`. The summary is fine-tuning's (`summary.json`); the metrics
/// log has the cross-entropy (`ce`) and distillation (`kd`) terms of every step.
pub fn run(cfg: &DistillConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    cfg.validate()?;
    if cfg.distill.teacher_cache.is_some() {
        return run_cached(cfg, resume, on_event);
    }
    let student = cfg.student();
    on_event(Event::Note(format!("loading the teacher {}", cfg.teacher.model)));
    let teacher = load_teacher(cfg)?;
    let run_dir = open_run_dir(cfg, &cfg.output.dir, resume, cfg.train.save_every)?;
    if cfg.distill.loss == LossName::Uld {
        return super::distill_cross::run(cfg, &teacher, run_dir, on_event);
    }
    let spec = cfg.distill.spec();
    let (summary, _) = train_with(&student, run_dir, on_event, &teacher, |tm, teacher| {
        check_same_tokenizer(&teacher.tokenizer, &tm.tokenizer)?;
        let clock = tm.lora.as_ref().map(|l| l.clock.clone());
        let objective = Distillation::new(&tm.model, &teacher.model, tm.vars.clone(), clock, spec)?
            .with_on_policy(on_policy_settings(cfg, &tm.tokenizer));
        let d = &cfg.distill;
        if d.hidden_layers.is_empty() {
            return Ok(Box::new(objective));
        }
        let widths = (teacher.model.config().hidden_size, tm.model.config().hidden_size);
        let pairs = d.hidden_layers.iter().map(|&[t, s]| (t, s)).collect();
        let device = crate::models::Model::device(&tm.model);
        let hidden = HiddenMatch::new(pairs, d.hidden_loss, d.hidden_weight, widths, cfg.train.seed, device)?;
        Ok(Box::new(objective.with_hidden(hidden)?))
    })?;
    Ok(summary)
}

/// The on-policy steps `cfg` asks for (`distill.on_policy*`, `train.seed`, `train.grad_accum`,
/// `data.seq_len`), sampling with the student's tokenizer `student`'s EOS.
pub fn on_policy_settings(cfg: &DistillConfig, student: &Tokenizer) -> OnPolicy {
    let d = &cfg.distill;
    OnPolicy {
        share: d.on_policy,
        max_new_tokens: d.on_policy_max_new_tokens,
        sampling: d.on_policy_sampling(),
        seed: cfg.train.seed,
        grad_accum: cfg.train.grad_accum as u64,
        seq_len: cfg.data.seq_len,
        eos_ids: student.eos_id().into_iter().collect(),
        pad_id: student.batch_pad_id(),
    }
}

/// [`run`] with `distill.teacher_cache`: the cache is filled first when it is not there (or
/// reused, without loading the teacher), then the student trains against it; `summary.json`
/// reports what was done (`teacher_cache`).
fn run_cached(cfg: &DistillConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    let run_dir = open_run_dir(cfg, &cfg.output.dir, resume, cfg.train.save_every)?;
    let (cache, report) = super::distill_fill::prepare(cfg, on_event)?;
    let spec = cfg.distill.spec();
    let (mut summary, _) = train_with(&cfg.student(), run_dir, on_event, &cache, |tm, cache| {
        let rows = cache.load(crate::models::Model::device(&tm.model))?;
        let clock = tm.lora.as_ref().map(|l| l.clock.clone());
        Ok(Box::new(CachedDistillation::new(&tm.model, rows, tm.vars.clone(), clock, spec)?))
    })?;
    summary.teacher_cache = Some(report);
    write_summary(&cfg.output.dir, &summary)?;
    Ok(summary)
}
