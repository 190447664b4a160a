//! Classification by label scoring, and its metrics (accuracy, per-class precision / recall /
//! F1, macro-F1).
//!
//! A decoder classifies by comparing the likelihood of each label's first token right after the
//! prompt — no free-form generation, no parsing — so every prediction is one of the labels.

use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    /// Class name.
    pub label: String,
    /// TP / (TP + FP); 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no examples.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Number of gold examples of this class.
    pub support: usize,
}

/// Accuracy and F1 scores of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Share of predictions equal to the gold label.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// Scores per class, in label order.
    pub per_class: Vec<ClassScores>,
    /// `confusion[gold][pred]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Scores `pred` against `gold` (both label indices into `labels`).
pub fn report(gold: &[usize], pred: &[usize], labels: &[&str]) -> ClassificationReport {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&g, &p) in gold.iter().zip(pred) {
        confusion[g][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassScores> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|g| confusion[g][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
            let recall = if support > 0 { tp / support as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            ClassScores { label: labels[c].to_string(), precision, recall, f1, support }
        })
        .collect();
    let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64;
    let accuracy = if gold.is_empty() { 0.0 } else { correct as f64 / gold.len() as f64 };
    ClassificationReport { accuracy, macro_f1, per_class, confusion }
}

/// For each prompt, the index of the label whose first token is most likely next.
///
/// Prompts are run `batch` at a time, right-padded with `pad_id`: causal attention means the
/// padding after a prompt cannot change the logits at its last real position.
pub fn score_labels(
    model: &dyn Model,
    prompts: &[Vec<u32>],
    label_first_ids: &[u32],
    pad_id: u32,
    batch: usize,
) -> Result<Vec<usize>> {
    Ok(label_logits(model, prompts, label_first_ids, pad_id, batch)?.iter().map(|row| argmax(row)).collect())
}

/// Index of the largest value (the first of equals; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// For each prompt, the next-token logits of each label's first token (what [`score_labels`]
/// compares; calibration methods reweigh them).
pub fn label_logits(
    model: &dyn Model,
    prompts: &[Vec<u32>],
    label_first_ids: &[u32],
    pad_id: u32,
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut distinct = label_first_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != label_first_ids.len() {
        return Err(GraftError::Input(
            "two labels start with the same token; label scoring cannot tell them apart".into(),
        ));
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(GraftError::Input("an empty prompt cannot be scored".into()));
    }
    // Prompts built from one template share a prefix (system prompt, instruction): run it once
    // and continue every batch from a copy of its cache. At least one token of each prompt stays
    // in the suffix, where its logits are read.
    let shortest = prompts.iter().map(Vec::len).min().unwrap_or(0);
    let common = match prompts.first() {
        Some(first) => {
            (0..shortest.saturating_sub(1)).take_while(|&i| prompts.iter().all(|p| p[i] == first[i])).count()
        }
        None => 0,
    };
    let mut prefix_cache = model.new_cache();
    if common > 0 {
        let prefix = Tensor::from_vec(prompts[0][..common].to_vec(), (1, common), model.device())?;
        model.forward_infer_last(&prefix, &mut prefix_cache)?;
    }
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch.max(1)) {
        let width = chunk.iter().map(|p| p.len() - common).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(chunk.len() * width);
        for p in chunk {
            flat.extend_from_slice(&p[common..]);
            flat.extend(std::iter::repeat_n(pad_id, width - (p.len() - common)));
        }
        let ids = Tensor::from_vec(flat, (chunk.len(), width), model.device())?;
        let positions: Vec<usize> = chunk.iter().map(|p| p.len() - common - 1).collect();
        let mut cache = prefix_cache.repeat_batch(chunk.len())?;
        let logits = model.logits_at(&ids, &positions, &mut cache)?.to_dtype(DType::F32)?;
        for row in 0..chunk.len() {
            let last: Vec<f32> = logits.get(row)?.to_vec1()?;
            out.push(label_first_ids.iter().map(|&id| last[id as usize]).collect());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        // gold: a a a b b c ; pred: a a b b c c
        let r = report(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], &["a", "b", "c"]);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // a: P 2/2, R 2/3, F1 0.8; b: P 1/2, R 1/2, F1 0.5; c: P 1/2, R 1/1, F1 2/3
        let f1: Vec<f64> = r.per_class.iter().map(|c| c.f1).collect();
        assert!((f1[0] - 0.8).abs() < 1e-12 && (f1[1] - 0.5).abs() < 1e-12 && (f1[2] - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(r.confusion[0], vec![2, 1, 0]);
    }

    #[test]
    fn class_never_predicted_scores_zero() {
        let r = report(&[0, 1], &[0, 0], &["a", "b"]);
        assert_eq!(r.per_class[1].precision, 0.0);
        assert_eq!(r.per_class[1].f1, 0.0);
    }
}
