//! Sequence-level distillation data: a teacher model answers the prompts of a training file and
//! the answers replace the file's own, written as a JSONL file of the same format (so `graft
//! train` reads it unchanged) with the teacher's token count per record.
//!
//! The transfer is at the text level: the teacher's tokenizer decodes its answer, and the student
//! tokenizes the text when it trains, so teacher and student may have different vocabularies.
//! The file is a resumable cache: records are appended and flushed one at a time, a sidecar
//! (`<out>.meta.json`, [`cache`]) records digests of the teacher, its adapter, the data and the
//! generation settings, and a rerun continues after the last complete line or refuses a file
//! made from other inputs. Each record's sampler is seeded from (seed, record index), so the
//! answers are the same whether the file was written in one go or across interruptions.
//!
//! Generation is one prompt at a time (graft's generator decodes batch 1 with a KV cache).

pub mod cache;

use crate::assets::ModelSource;
use crate::data::{read_answer_records, DataFormat};
use crate::generate::{check_prompt, generate_text, GenerateOptions, SamplingConfig, StopStrings};
use crate::models::llama::{LoadOptions, WeightFormat};
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use cache::{DataPrint, Fingerprint};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The answers file's name inside a run directory.
pub const ANSWERS_FILE: &str = "teacher_answers.jsonl";

/// Where the teacher answers of the run in `run_dir` are cached.
pub fn answers_path(run_dir: &Path) -> PathBuf {
    run_dir.join(ANSWERS_FILE)
}

/// How the teacher answers each prompt (greedy by default); part of the cache's fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSettings {
    /// Most tokens per answer; an answer also ends at the teacher's EOS.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0 = all).
    pub top_k: usize,
    /// Sample among the most likely tokens holding probability top_p only (1 = all).
    pub top_p: f32,
    /// Penalty for tokens already present (1 = none).
    pub repetition_penalty: f32,
    /// Seed; record `i` samples with a generator seeded from (seed, i).
    pub seed: u64,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl AnswerSettings {
    /// The sampler's settings.
    pub fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(GraftError::Input("max_new_tokens must be at least 1".into()));
        }
        self.sampling().validate()
    }
}

/// The seed of record `index`'s sampler: a SplitMix64 mix of `seed` and `index`, so records draw
/// independent streams that do not depend on which records were generated before.
pub fn record_seed(seed: u64, index: u64) -> u64 {
    crate::generate::stream_seed(seed, index)
}

/// The teacher: any model graft loads, with an optional LoRA adapter on top.
#[derive(Debug, Clone)]
pub struct TeacherSpec {
    /// The model as the user named it (for reports).
    pub name: String,
    /// Its resolved files.
    pub source: ModelSource,
    /// Device, dtype and weight format.
    pub load: LoadOptions,
    /// An adapter as `--adapter` takes it: a PEFT folder, a `graft train` run folder or a GGUF
    /// LoRA file.
    pub adapter: Option<PathBuf>,
}

/// One teacher-answers job.
#[derive(Debug, Clone)]
pub struct AnswerJob {
    /// Who answers.
    pub teacher: TeacherSpec,
    /// The training file whose prompts are answered (a path or `dataset:NAME/FILE`).
    pub data: PathBuf,
    /// Its format: `messages`, `alpaca` or `prompt_completion`.
    pub format: DataFormat,
    /// The answers file (its sidecar is `<out>.meta.json`).
    pub out: PathBuf,
    /// How answers are generated.
    pub settings: AnswerSettings,
}

/// What happens while answering.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// A line for the user (model loaded, resuming, ...).
    Note(String),
    /// One more record was answered.
    Answered {
        /// Records in the file now.
        done: usize,
        /// Records in the data file.
        total: usize,
        /// Tokens generated since this run started.
        tokens: usize,
        /// Seconds of generation since this run started.
        secs: f64,
    },
}

/// What a job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerSummary {
    /// The answers file.
    pub out: PathBuf,
    /// Records in it (= records of the data file).
    pub records: usize,
    /// Records that were already there and kept.
    pub resumed: usize,
    /// Records answered by this run.
    pub generated: usize,
    /// Tokens the teacher generated in this run (an ending EOS included).
    pub tokens_generated: usize,
    /// Answers of this run that did not end with EOS (cut at `max_new_tokens` or the context end).
    pub cut_short: usize,
    /// Seconds of generation in this run.
    pub secs: f64,
    /// Generated tokens per second.
    pub tokens_per_s: f64,
    /// Answers per second.
    pub answers_per_s: f64,
}

fn per_s(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The teacher's precision and weight format as the fingerprints name them (`f32`, `dense`).
pub(crate) fn dtype_name(load: &LoadOptions) -> (&'static str, &'static str) {
    let weights = match load.format {
        WeightFormat::Dense => "dense",
        WeightFormat::Quantized => "quantized",
    };
    (load.dtype.as_str(), weights)
}

/// Answers every prompt of `job.data` with the teacher into `job.out`, continuing a file left
/// by an interrupted run with the same inputs (see the module documentation).
pub fn write_teacher_answers(job: &AnswerJob, on_event: &mut dyn FnMut(AnswerEvent)) -> Result<AnswerSummary> {
    job.settings.validate()?;
    let data = crate::recipes::data_build::resolve(&job.data, &mut |n| on_event(AnswerEvent::Note(n)))?;
    let tok = Tokenizer::from_source(&job.teacher.source)?;
    let records = read_answer_records(&data, job.format, &tok)?;
    let (dtype, weights) = dtype_name(&job.teacher.load);
    let print = Fingerprint {
        teacher: cache::teacher_print(
            &job.teacher.name,
            &job.teacher.source,
            dtype,
            weights,
            job.teacher.adapter.as_deref(),
        )?,
        data: DataPrint {
            path: job.data.display().to_string(),
            format: job.format,
            sha256: cache::digest_path(&data)?,
        },
        settings: job.settings.clone(),
    };
    let resumed = cache::prepare(&job.out, &print, records.len())?;
    let mut summary = AnswerSummary {
        out: job.out.clone(),
        records: records.len(),
        resumed,
        generated: 0,
        tokens_generated: 0,
        cut_short: 0,
        secs: 0.0,
        tokens_per_s: 0.0,
        answers_per_s: 0.0,
    };
    if resumed == records.len() {
        on_event(AnswerEvent::Note(format!("{}: all {resumed} records answered already", job.out.display())));
        return Ok(summary);
    }
    if resumed > 0 {
        on_event(AnswerEvent::Note(format!("{}: continuing after {resumed} answered records", job.out.display())));
    }

    let mut model = crate::models::load::load_causal_lm(&job.teacher.source, &job.teacher.load)?;
    if let Some(adapter) = &job.teacher.adapter {
        let set = crate::io::adapter::load_adapter(adapter, &mut model)?;
        on_event(AnswerEvent::Note(format!(
            "teacher adapter {}: LoRA r={} on {} projections",
            adapter.display(),
            set.spec.r,
            set.layers.len()
        )));
    }
    let detok = |ids: &[u32]| tok.decode(ids, true).map_err(GraftError::from);
    let stops = StopStrings::new(Vec::new())?;
    let eos_ids: Vec<u32> = tok.eos_id().into_iter().collect();
    let mut file = std::fs::OpenOptions::new().append(true).open(&job.out).map_err(|e| GraftError::io(&job.out, e))?;
    let start = Instant::now();
    // Every prompt must fit the teacher's context before anything is generated.
    for record in &records[resumed..] {
        check_prompt(&model, &record.prompt_ids)
            .map_err(|e| GraftError::Input(format!("{}:{}: {e}", data.display(), record.line)))?;
    }
    for (index, record) in records.iter().enumerate().skip(resumed) {
        let opts = GenerateOptions {
            max_new_tokens: job.settings.max_new_tokens,
            sampling: job.settings.sampling(),
            seed: record_seed(job.settings.seed, index as u64),
            eos_ids: eos_ids.clone(),
            ..GenerateOptions::default()
        };
        let answer = generate_text(&model, &detok, &record.prompt_ids, &opts, &stops, &mut |_| Ok(()))?;
        let g = &answer.generation;
        let line = record.answered(
            &answer.text,
            &[("teacher_tokens", g.new_ids.len().into()), ("teacher_stop", g.stop_reason.as_str().into())],
        );
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| GraftError::io(&job.out, e))?;
        summary.generated += 1;
        summary.tokens_generated += g.new_ids.len();
        summary.cut_short += usize::from(g.stop_reason != crate::generate::StopReason::Eos);
        on_event(AnswerEvent::Answered {
            done: index + 1,
            total: records.len(),
            tokens: summary.tokens_generated,
            secs: start.elapsed().as_secs_f64(),
        });
    }
    file.sync_all().map_err(|e| GraftError::io(&job.out, e))?;
    summary.secs = start.elapsed().as_secs_f64();
    summary.tokens_per_s = per_s(summary.tokens_generated, summary.secs);
    summary.answers_per_s = per_s(summary.generated, summary.secs);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_seeds_differ_per_record_and_per_seed() {
        let seeds: std::collections::BTreeSet<u64> =
            (0..3).flat_map(|s| (0..100).map(move |i| record_seed(s, i))).collect();
        assert_eq!(seeds.len(), 300);
        assert_eq!(record_seed(7, 5), record_seed(7, 5));
    }

    #[test]
    fn zero_new_tokens_is_refused() {
        let s = AnswerSettings { max_new_tokens: 0, ..AnswerSettings::default() };
        assert!(s.validate().unwrap_err().to_string().contains("max_new_tokens"));
        let s = AnswerSettings { top_p: 0.0, ..AnswerSettings::default() };
        assert!(s.validate().is_err());
    }
}
