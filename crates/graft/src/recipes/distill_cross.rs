//! Distillation across tokenizers (`distill.loss = "uld"`): every example is read twice, for the
//! student's tokenizer and for the teacher's (`data::load_paired_examples`), travels as one item
//! through the split, the replay mix and the per-epoch shuffle, and is batched into
//! [`PairedBatch`]es whose student half is exactly what plain training builds; the objective is
//! [`CrossDistillation`]. Everything else is fine-tuning's pipeline (`finetune::train_with_data`).

use super::distill::Teacher;
use super::finetune::{train_with_data, RunData, Summary};
use crate::config::distill::DistillConfig;
use crate::config::TrainConfig;
use crate::data::{self, DataFormat, Example, LoadReport};
use crate::objectives::cross_distillation::CrossDistillation;
use crate::objectives::token_pairing::{make_paired_batches, PairedBatch};
use crate::tokenizer::Tokenizer;
use crate::train::{Event, RunDir};
use crate::Result;
use candle_core::Device;
use std::path::Path;

/// The data of a cross-tokenizer run: each student example with the teacher's rendering of the
/// same record.
pub(crate) struct CrossData<'t> {
    /// The teacher's tokenizer.
    pub teacher: &'t Tokenizer,
}

impl RunData for CrossData<'_> {
    type Item = (Example, Example);
    type Batch = PairedBatch;

    fn load(
        &self,
        path: &Path,
        format: DataFormat,
        tok: &Tokenizer,
        seq_len: usize,
    ) -> Result<(Vec<Self::Item>, LoadReport)> {
        Ok(data::load_paired_examples(path, format, tok, self.teacher, seq_len)?)
    }

    fn example(item: &Self::Item) -> &Example {
        &item.0
    }

    fn batches(&self, items: &[Self::Item], cfg: &TrainConfig, pad: u32, device: &Device) -> Result<Vec<PairedBatch>> {
        let teacher_pad = self.teacher.pad_id().or(self.teacher.eos_id()).unwrap_or(0);
        Ok(make_paired_batches(items, cfg.train.batch_size, cfg.data.seq_len, (pad, teacher_pad), device)?)
    }
}

/// Trains the student of `cfg` against `teacher` with the ULD loss, in `run_dir`.
pub(crate) fn run(
    cfg: &DistillConfig,
    teacher: &Teacher,
    run_dir: RunDir,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let spec = cfg.distill.spec();
    let run_data = CrossData { teacher: &teacher.tokenizer };
    let (summary, _) = train_with_data(&cfg.student(), run_dir, on_event, teacher, &run_data, |tm, teacher| {
        let clock = tm.lora.as_ref().map(|l| l.clock.clone());
        Ok(Box::new(CrossDistillation::new(&tm.model, &teacher.model, tm.vars.clone(), clock, spec)?))
    })?;
    Ok(summary)
}
