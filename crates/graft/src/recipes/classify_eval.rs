//! `graft eval classify`: a classification task's held-out file, scored by label scoring.
//!
//! Every line of a training-format file (`messages`, `alpaca`, `prompt_completion`) whose answer
//! is a label word becomes one example: the prompt is rendered exactly as training renders it
//! (chat template and assistant header included), the model's next-token logits at its end are
//! compared on the first token of each label, and the most likely label is the prediction. No
//! free text is generated or parsed, so every prediction is one of the labels and the held-out
//! split of a task trained with `graft train` / `graft distill` evaluates the same way for a base
//! model, a LoRA run, a fully fine-tuned run or a smaller student.

use crate::data::DataFormat;
use crate::data::{read_answer_records, AnswerRecord};
use crate::eval::classification::{self, ClassificationReport};
use crate::models::Model;
use crate::prompting::label_first_ids;
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Prompts scored per forward pass.
const BATCH: usize = 16;

/// The examples of a held-out file: prompts and gold label indices into `labels`.
#[derive(Debug, Clone)]
pub struct ClassifyData {
    /// Label words, in the order of the report's classes.
    pub labels: Vec<String>,
    /// Prompt token ids, one per example.
    pub prompts: Vec<Vec<u32>>,
    /// Gold label index of each example.
    pub gold: Vec<usize>,
}

/// Reads `path` (first `limit` lines when given) and maps each answer to a label. With `labels`
/// empty, the labels are the distinct answers of the file, sorted; otherwise an answer outside
/// `labels` is an error naming its line. Answers are compared after trimming white space.
pub fn read_classify_data(
    path: &Path,
    format: DataFormat,
    tok: &Tokenizer,
    labels: &[String],
    limit: Option<usize>,
) -> Result<ClassifyData> {
    let mut records: Vec<AnswerRecord> = read_answer_records(path, format, tok)?;
    if let Some(n) = limit {
        records.truncate(n);
    }
    let answers: Vec<(usize, String)> = records
        .iter()
        .map(|r| {
            let answer = r.answer().map(str::trim).unwrap_or_default();
            if answer.is_empty() {
                return Err(GraftError::Input(format!(
                    "{}:{}: the answer (gold label) is empty",
                    path.display(),
                    r.line
                )));
            }
            Ok((r.line, answer.to_string()))
        })
        .collect::<Result<_>>()?;
    let labels: Vec<String> = if labels.is_empty() {
        answers.iter().map(|(_, a)| a.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        labels.iter().map(|l| l.trim().to_string()).collect()
    };
    if labels.len() < 2 {
        return Err(GraftError::Input(format!(
            "{}: classification needs at least two labels, found {:?} (pass them with --labels)",
            path.display(),
            labels
        )));
    }
    let gold = answers
        .iter()
        .map(|(line, a)| {
            labels.iter().position(|l| l == a).ok_or_else(|| {
                GraftError::Input(format!(
                    "{}:{line}: answer `{a}` is not one of the labels {labels:?}",
                    path.display()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let prompts = records.into_iter().map(|r| r.prompt_ids).collect();
    Ok(ClassifyData { labels, prompts, gold })
}

/// Predictions and scores of `model` on `data`.
#[derive(Debug, Clone)]
pub struct ClassifyResult {
    /// Predicted label index of each example.
    pub pred: Vec<usize>,
    /// Accuracy, macro-F1, per-class scores and confusion matrix.
    pub report: ClassificationReport,
}

/// Scores every example of `data` by label scoring with `model`. Labels must start with
/// different tokens (an error otherwise).
pub fn classify(model: &dyn Model, tok: &Tokenizer, data: &ClassifyData) -> Result<ClassifyResult> {
    let labels: Vec<&str> = data.labels.iter().map(String::as_str).collect();
    let ids = label_first_ids(tok, &labels)?;
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let pred = classification::score_labels(model, &data.prompts, &ids, pad, BATCH)?;
    let report = classification::report(&data.gold, &pred, &labels);
    Ok(ClassifyResult { pred, report })
}
