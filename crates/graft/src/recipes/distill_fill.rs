//! Filling the teacher cache of a distillation run (`distill.teacher_cache`): the fingerprint of
//! what decides the cached values, and the pass that runs the teacher once over every example of
//! `data.train` before training, writing its top-`k` log-probabilities at the supervised
//! positions through [`CacheWriter`]. A folder holding a finished cache with the same
//! fingerprint is reused without loading the teacher; one with another fingerprint is refused
//! naming the keys that differ; one without a manifest (an interrupted fill) is filled again.

use super::distill::{check_same_tokenizer, load_teacher, teacher_load_options};
use super::distill_cache::{row_key, CacheWriter, CachedRow, TeacherCache};
use super::teacher_answers::cache::{digest_path, teacher_print, DataPrint};
use super::teacher_answers::dtype_name;
use crate::assets::{resolve_model, ModelSource};
use crate::config::distill::DistillConfig;
use crate::data::{self, Example};
use crate::models::llama::{Llama, Pass, SupervisedRows};
use crate::ops::{teacher_top_k, SparseTeacher};
use crate::tokenizer::Tokenizer;
use crate::train::Event;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Positions per shard file (a shard at `k = 64` is about 2 MB).
const SHARD_POSITIONS: usize = 4096;

/// Whether this run filled the cache or found it filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheState {
    /// The teacher ran over the training data in this run.
    Filled,
    /// A finished cache with the same fingerprint was there; the teacher was not loaded.
    Reused,
}

impl CacheState {
    /// `filled` or `reused`, as `summary.json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Filled => "filled",
            CacheState::Reused => "reused",
        }
    }
}

/// What a run did with its teacher cache (`summary.json`'s `teacher_cache`).
#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// The cache folder.
    pub dir: PathBuf,
    /// `filled` or `reused`.
    pub state: CacheState,
    /// Seconds the fill pass took (teacher load included); 0 when reused.
    pub fill_time_s: f64,
    /// Training examples whose supervised positions the cache holds.
    pub examples: usize,
    /// Positions it holds.
    pub positions: usize,
    /// Token ids kept per position.
    pub top_k: usize,
    /// Bytes of its files (shards and manifest).
    pub bytes: u64,
}

/// The fingerprint of `cfg`'s cache: the teacher's files, precision, weight format and adapter
/// (`teacher_print`), the training file's bytes and format ([`DataPrint`]), `data.seq_len`,
/// `cache_top_k` and the temperature. Names and paths are left out, as for teacher answers: a
/// moved file with the same bytes is the same input.
pub fn fingerprint(cfg: &DistillConfig, train_file: &Path, teacher: &ModelSource) -> Result<Value> {
    let (dtype, weights) = dtype_name(&teacher_load_options(cfg)?);
    let t = &cfg.teacher;
    let teacher = teacher_print(&t.model, teacher, dtype, weights, t.adapter.as_deref())?;
    let data =
        DataPrint { path: train_file.display().to_string(), format: cfg.data.format, sha256: digest_path(train_file)? };
    let mut print = json!({
        "teacher": teacher,
        "data": data,
        "seq_len": cfg.data.seq_len,
        "k": cfg.distill.cache_top_k,
        "temperature": cfg.distill.temperature,
    });
    for (section, key) in [("teacher", "model"), ("teacher", "adapter"), ("data", "path")] {
        if let Some(fields) = print[section].as_object_mut() {
            fields.remove(key);
        }
    }
    Ok(print)
}

/// The finished teacher cache of `cfg` (`distill.teacher_cache` set) and what was done: reused
/// when the folder holds one made for the same fingerprint (only the teacher's tokenizer is read,
/// to check it against the student's), else filled now by one teacher pass over `data.train`.
pub fn prepare(cfg: &DistillConfig, on_event: &mut dyn FnMut(Event)) -> Result<(TeacherCache, CacheReport)> {
    let Some(dir) = cfg.distill.teacher_cache.as_deref() else {
        return Err(GraftError::Input("internal: no distill.teacher_cache to prepare".into()));
    };
    let (train_file, _) = super::data_build::data_files(&cfg.data, &mut |n| on_event(Event::Note(n)))?;
    let source = resolve_model(&cfg.teacher.model, false)?;
    let print = fingerprint(cfg, &train_file, &source)?;
    let student = super::parts::run_tokenizer(&cfg.student())?;
    if let Some(cache) = TeacherCache::open(dir, &print)? {
        check_same_tokenizer(&Tokenizer::from_source(&source)?, &student)?;
        let report = report(&cache, dir, CacheState::Reused, 0.0)?;
        on_event(Event::Note(format!(
            "teacher cache {}: reusing {} positions of {} examples (the teacher is not loaded)",
            dir.display(),
            report.positions,
            report.examples
        )));
        return Ok((cache, report));
    }
    let started = Instant::now();
    let (examples, _) = data::load_examples(&train_file, cfg.data.format, &student, cfg.data.seq_len)?;
    on_event(Event::Note(format!("loading the teacher {}", cfg.teacher.model)));
    let teacher = load_teacher(cfg)?;
    check_same_tokenizer(&teacher.tokenizer, &student)?;
    let pad = student.pad_id().or(student.eos_id()).unwrap_or(0);
    let cache = fill(&teacher.model, &examples, cfg, dir, print, pad, on_event)?;
    let report = report(&cache, dir, CacheState::Filled, started.elapsed().as_secs_f64())?;
    on_event(Event::Note(format!(
        "teacher cache {}: filled with {} positions of {} examples, {:.1} MB, in {:.1} s",
        dir.display(),
        report.positions,
        report.examples,
        report.bytes as f64 / 1e6,
        report.fill_time_s
    )));
    Ok((cache, report))
}

fn report(cache: &TeacherCache, dir: &Path, state: CacheState, fill_time_s: f64) -> Result<CacheReport> {
    let shards = &cache.manifest.shards;
    let top_k = cache.manifest.fingerprint["k"].as_u64().unwrap_or(0) as usize;
    Ok(CacheReport {
        dir: dir.to_path_buf(),
        state,
        fill_time_s,
        examples: shards.iter().map(|s| s.rows.len()).sum(),
        positions: shards.iter().map(|s| s.positions).sum(),
        top_k,
        bytes: cache.bytes()?,
    })
}

/// Shard contents not written yet.
#[derive(Default)]
struct Pending {
    parts: Vec<SparseTeacher>,
    rows: Vec<CachedRow>,
    positions: usize,
}

impl Pending {
    fn flush(&mut self, writer: &mut CacheWriter) -> Result<()> {
        if self.parts.is_empty() {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.parts);
        let cat = |f: fn(&SparseTeacher) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        let shard = SparseTeacher { ids: cat(|p| &p.ids)?, log_probs: cat(|p| &p.log_probs)?, rest: cat(|p| &p.rest)? };
        writer.push_rows(&shard, std::mem::take(&mut self.rows))?;
        self.positions = 0;
        Ok(())
    }
}

/// Runs `teacher` (inference path) over `examples` in file order, `train.batch_size` at a time
/// and padded as training pads them, and writes the top-`k` of every supervised position into
/// the cache folder, each example's positions keyed by [`row_key`]; the manifest comes last.
fn fill(
    teacher: &Llama,
    examples: &[Example],
    cfg: &DistillConfig,
    dir: &Path,
    print: Value,
    pad: u32,
    on_event: &mut dyn FnMut(Event),
) -> Result<TeacherCache> {
    let (k, t) = (cfg.distill.cache_top_k, cfg.distill.temperature);
    let vocab = teacher.config().vocab_size;
    if k > vocab {
        return Err(GraftError::Input(format!(
            "config key `distill.cache_top_k`: {k} is more than the teacher's vocabulary ({vocab} ids)"
        )));
    }
    let head = teacher.head_weight().ok_or_else(|| {
        GraftError::Input("the teacher's LM head carries an adapter; the cache needs a plain head".into())
    })?;
    let device = crate::models::Model::device(teacher).clone();
    let mut writer = CacheWriter::create(dir, print)?;
    let (batch_size, seq_len) = (cfg.train.batch_size, cfg.data.seq_len);
    let (mut pending, mut done, mut positions) = (Pending::default(), 0usize, 0usize);
    let (started, mut noted) = (Instant::now(), Instant::now());
    for chunk in examples.chunks(batch_size) {
        let batch = data::make_batches(chunk, batch_size, seq_len, false, pad, &device)?;
        for b in &batch {
            let ids: Vec<Vec<u32>> = b.ids.to_vec2()?;
            let mask: Vec<Vec<f32>> = b.mask.to_dtype(DType::F32)?.to_vec2()?;
            let rows: Vec<CachedRow> = ids
                .iter()
                .zip(&mask)
                .filter_map(|(i, m)| {
                    let positions = m.iter().filter(|&&x| x != 0.0).count();
                    row_key(i, m).map(|key| CachedRow { key, positions })
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let hidden = teacher.hidden_states(&b.ids, None, Pass::Infer)?;
            let selected = SupervisedRows::of(&hidden, &b.targets, &b.mask, teacher.work_dtype())?;
            let sparse = teacher_top_k(&selected.hidden.detach(), &head, k, t)?;
            let n = sparse.dims()?.0;
            positions += n;
            pending.positions += n;
            pending.parts.push(sparse);
            pending.rows.extend(rows);
            if pending.positions >= SHARD_POSITIONS {
                pending.flush(&mut writer)?;
            }
        }
        done += chunk.len();
        if noted.elapsed().as_secs_f64() >= 2.0 || done == examples.len() {
            noted = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            on_event(Event::Note(format!(
                "teacher cache: {done}/{} examples, {positions} positions, {:.0} positions/s",
                examples.len(),
                if secs > 0.0 { positions as f64 / secs } else { 0.0 }
            )));
        }
    }
    pending.flush(&mut writer)?;
    writer.finish()
}
