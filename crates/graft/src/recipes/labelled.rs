//! A classification task given as two `{"text": ..., "label": ...}` JSONL files (training and
//! held-out): its classes are the distinct training labels, sorted, and every held-out label must
//! be one of them. Shared by the heads trained on sentence embeddings (`graft features
//! progressive`, `graft eval probe`).

use crate::data::{read_labelled, Labelled};
use crate::{GraftError, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// The examples of a task's two files with their label indices.
#[derive(Debug, Clone)]
pub struct LabelledSets {
    /// The classes: the distinct training labels, sorted.
    pub labels: Vec<String>,
    /// Training examples, in file order.
    pub train: Vec<Labelled>,
    /// Index into `labels` of each training example.
    pub train_y: Vec<usize>,
    /// Held-out examples, in file order.
    pub eval: Vec<Labelled>,
    /// Index into `labels` of each held-out example.
    pub eval_y: Vec<usize>,
}

impl LabelledSets {
    /// Reads `train` (only its first `limit_train` lines when given) and `eval`. Errors name the
    /// file and line: a malformed line, an empty label, a held-out label that is not a training
    /// label; fewer than 2 training labels is an error naming the file.
    pub fn read(train: &Path, eval: &Path, limit_train: Option<usize>) -> Result<Self> {
        let mut train_rows = read_labelled(train)?;
        if let Some(n) = limit_train {
            train_rows.truncate(n);
        }
        let eval_rows = read_labelled(eval)?;
        for (path, rows) in [(train, &train_rows), (eval, &eval_rows)] {
            if let Some(r) = rows.iter().find(|r| r.label.is_empty()) {
                return Err(GraftError::Input(format!("{}:{}: empty label", path.display(), r.line)));
            }
        }
        let labels: Vec<String> =
            train_rows.iter().map(|r| r.label.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        if labels.len() < 2 {
            return Err(GraftError::Input(format!(
                "{} has {} distinct label(s); a classifier needs at least 2",
                train.display(),
                labels.len()
            )));
        }
        let train_y = label_indices(train, &train_rows, &labels)?;
        let eval_y = label_indices(eval, &eval_rows, &labels)?;
        Ok(Self { labels, train: train_rows, train_y, eval: eval_rows, eval_y })
    }

    /// The training texts, in file order.
    pub fn train_texts(&self) -> Vec<String> {
        self.train.iter().map(|r| r.text.clone()).collect()
    }

    /// The held-out texts, in file order.
    pub fn eval_texts(&self) -> Vec<String> {
        self.eval.iter().map(|r| r.text.clone()).collect()
    }
}

/// Label indices of `records` into `labels`; a label outside them is an error naming the line.
fn label_indices(path: &Path, records: &[Labelled], labels: &[String]) -> Result<Vec<usize>> {
    records
        .iter()
        .map(|r| {
            labels.iter().position(|l| *l == r.label).ok_or_else(|| {
                GraftError::Input(format!(
                    "{}:{}: label `{}` is not among the training labels {labels:?}",
                    path.display(),
                    r.line,
                    r.label
                ))
            })
        })
        .collect()
}
