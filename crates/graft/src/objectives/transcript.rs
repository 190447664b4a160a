//! Whisper's training objective: the summed next-token loss of each clip's transcript and end
//! of text given its audio and the transcribe prompt (teacher forcing), as the Hugging Face
//! Whisper fine-tuning recipe computes it. A micro-batch is a list of clip indices.
//!
//! The audio comes in one of two forms ([`EncoderInput`]): when no weight of the encoder
//! trains, each clip's encoder states are computed once and reused at every step (exact, as the
//! encoder has no dropout); otherwise each step encodes the clips' log-mel through the training
//! path, so gradients reach the encoder's adapters or weights.

use crate::adapters::lora::DropoutClock;
use crate::models::whisper::{Pass, Whisper};
use crate::speech::train_set::TargetSequence;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// Where a clip's audio enters the decoder from.
#[derive(Debug, Clone)]
pub enum EncoderInput {
    /// Encoder states `[1, frames, d]` per clip, computed once (the encoder is frozen).
    States(Vec<Tensor>),
    /// Log-mel `[1, n_mels, 3000]` per clip, encoded at every step (the encoder trains).
    Mels(Vec<Tensor>),
}

impl EncoderInput {
    /// Clips held.
    pub fn len(&self) -> usize {
        match self {
            EncoderInput::States(v) | EncoderInput::Mels(v) => v.len(),
        }
    }

    /// Whether no clip is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoder states `[b, frames, d]` of clips `rows`, through the kernels of `pass`.
    pub fn states(&self, model: &Whisper, rows: &[usize], pass: Pass) -> Result<Tensor> {
        let (items, encode) = match self {
            EncoderInput::States(v) => (v, false),
            EncoderInput::Mels(v) => (v, true),
        };
        let picked = rows
            .iter()
            .map(|&i| items.get(i).cloned().ok_or_else(|| GraftError::Input(format!("no clip {i}"))))
            .collect::<Result<Vec<Tensor>>>()?;
        let batch = Tensor::cat(&picked, 0)?;
        if encode {
            model.encode(&batch, pass)
        } else {
            Ok(batch)
        }
    }
}

/// The teacher-forced inputs of `sequences`' rows `rows`: input ids `[b, t]` (each sequence
/// without its last token, padded with `pad`), the flat indices (into `b·t`) of the supervised
/// positions — from the prompt's last token on — and their target ids.
pub fn teacher_forcing(
    sequences: &[TargetSequence],
    rows: &[usize],
    pad: u32,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor, Tensor, usize)> {
    let seqs: Vec<&TargetSequence> = rows
        .iter()
        .map(|&i| sequences.get(i).ok_or_else(|| GraftError::Input(format!("no sequence {i}"))))
        .collect::<Result<_>>()?;
    let t = seqs.iter().map(|s| s.ids.len() - 1).max().unwrap_or(0);
    if t == 0 {
        return Err(GraftError::Input("a training sequence needs at least two tokens".into()));
    }
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (r, s) in seqs.iter().enumerate() {
        let n = s.ids.len() - 1;
        ids.extend_from_slice(&s.ids[..n]);
        ids.extend(std::iter::repeat_n(pad, t - n));
        for j in s.prompt_len.saturating_sub(1)..n {
            positions.push((r * t + j) as u32);
            targets.push(s.ids[j + 1]);
        }
    }
    let count = targets.len();
    let ids = Tensor::from_vec(ids, (seqs.len(), t), device)?;
    let positions = Tensor::new(positions.as_slice(), device)?;
    let targets = Tensor::new(targets.as_slice(), device)?;
    Ok((ids, positions, targets, count))
}

/// The summed negative log-likelihood of the supervised tokens of clips `rows` and their count,
/// through the kernels of `pass`.
pub fn transcript_nll(
    model: &Whisper,
    sequences: &[TargetSequence],
    input: &EncoderInput,
    rows: &[usize],
    pad: u32,
    pass: Pass,
) -> Result<(Tensor, usize)> {
    let audio = input.states(model, rows, pass)?;
    let (ids, positions, targets, _) = teacher_forcing(sequences, rows, pad, model.device())?;
    let logits = model.decode_logits(&ids, &audio, pass)?;
    let vocab = logits.dim(2)?;
    let picked = logits.reshape(((), vocab))?.index_select(&positions, 0)?;
    crate::train::loss::nll_sum(&picked, &targets)
}

/// Mean loss per supervised token over `batches` of clip indices, without a graph.
pub fn mean_transcript_nll(
    model: &Whisper,
    sequences: &[TargetSequence],
    input: &EncoderInput,
    batches: &[Vec<usize>],
    pad: u32,
) -> Result<f64> {
    let (mut total, mut count) = (0f64, 0usize);
    for rows in batches {
        let (sum, n) = transcript_nll(model, sequences, input, rows, pad, Pass::Infer)?;
        total += sum.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        count += n;
    }
    if count == 0 {
        return Err(GraftError::Input("no supervised token to evaluate".into()));
    }
    Ok(total / count as f64)
}

/// Transcript prediction on `model`, training `vars` (LoRA factors or the model's own weights).
pub struct TranscriptObjective<'a> {
    model: &'a Whisper,
    sequences: &'a [TargetSequence],
    input: &'a EncoderInput,
    pad: u32,
    vars: Vec<(String, Var)>,
    clock: Option<Arc<DropoutClock>>,
}

impl<'a> TranscriptObjective<'a> {
    /// The objective over the clips `sequences` / `input` (same order), padding with `pad`;
    /// `clock` is the LoRA set's dropout clock.
    pub fn new(
        model: &'a Whisper,
        sequences: &'a [TargetSequence],
        input: &'a EncoderInput,
        pad: u32,
        vars: Vec<(String, Var)>,
        clock: Option<Arc<DropoutClock>>,
    ) -> Self {
        Self { model, sequences, input, pad, vars, clock }
    }
}

impl Objective for TranscriptObjective<'_> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("model", self.vars.clone())]
    }

    fn loss(&self, batch: &Vec<usize>, micro_step: u64) -> Result<ObjectiveLoss> {
        if let Some(c) = &self.clock {
            c.set_step(micro_step);
        }
        let (sum, count) = transcript_nll(self.model, self.sequences, self.input, batch, self.pad, Pass::Train)?;
        Ok(LossSum { sum, count, sink: None }.into())
    }

    fn batch_size(&self, batch: &Vec<usize>) -> usize {
        batch.iter().filter_map(|&i| self.sequences.get(i)).map(|s| s.ids.len() - s.prompt_len).sum()
    }

    fn set_training(&self, on: bool) {
        if let Some(c) = &self.clock {
            c.set_training(on);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervises_transcript_and_end_of_text_only() {
        let seqs = vec![
            TargetSequence { ids: vec![1, 2, 3, 10, 11, 0], prompt_len: 3 },
            TargetSequence { ids: vec![1, 2, 3, 12, 0], prompt_len: 3 },
        ];
        let (ids, positions, targets, count) = teacher_forcing(&seqs, &[0, 1], 0, &candle_core::Device::Cpu).unwrap();
        assert_eq!(ids.to_vec2::<u32>().unwrap(), vec![vec![1, 2, 3, 10, 11], vec![1, 2, 3, 12, 0]]);
        // Row 0 predicts 10, 11, end from positions 2, 3, 4; row 1 predicts 12, end from 7, 8.
        assert_eq!(positions.to_vec1::<u32>().unwrap(), vec![2, 3, 4, 7, 8]);
        assert_eq!(targets.to_vec1::<u32>().unwrap(), vec![10, 11, 0, 12, 0]);
        assert_eq!(count, 5);
    }
}
