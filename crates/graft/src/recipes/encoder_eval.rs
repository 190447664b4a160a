//! Evaluations of a sentence encoder by what its frozen embeddings support: a classification
//! head trained on them (`graft eval probe`) and retrieval of each query's own target by cosine
//! similarity (`graft eval retrieval`). Both compare encoders (a base model against one adapted
//! by masked-LM or SimCSE training) with everything else fixed.

use super::labelled::LabelledSets;
use crate::eval::classification::{report, ClassificationReport};
use crate::eval::retrieval::{retrieval_scores, RetrievalScores};
use crate::features::{encoder_features, train_head, HeadConfig};
use crate::models::bert::SentenceEncoder;
use crate::{GraftError, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// How a trained head labels a set of unlabelled texts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreSummary {
    /// Number of texts.
    pub n: usize,
    /// Per class, the share of texts it is the most likely class of (the shares sum to 1).
    pub predicted_share: BTreeMap<String, f64>,
    /// Per class, the mean softmax probability the head gives it (the means sum to 1).
    pub mean_probability: BTreeMap<String, f64>,
}

/// The result of a probe: held-out scores and, when texts were given, how they are labelled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeOutcome {
    /// The classes, sorted.
    pub classes: Vec<String>,
    /// Training examples.
    pub n_train: usize,
    /// Held-out examples.
    pub n_test: usize,
    /// Accuracy, macro-F1, per-class scores and confusion matrix on the held-out examples.
    pub report: ClassificationReport,
    /// The head's labelling of the unlabelled texts, when given.
    pub score: Option<ScoreSummary>,
}

/// Trains a head (`head`) on the encoder's embeddings of `sets.train`, scores it on
/// `sets.eval`, and labels `score_texts` when given. `batch` texts per forward pass.
pub fn probe(
    enc: &SentenceEncoder,
    sets: &LabelledSets,
    score_texts: Option<&[String]>,
    head: &HeadConfig,
    batch: usize,
) -> Result<ProbeOutcome> {
    let train_x = encoder_features(enc, &sets.train_texts(), batch)?;
    let (trained, _) = train_head(&train_x, &sets.train_y, sets.labels.len(), head)?;
    let predicted = trained.predict(&encoder_features(enc, &sets.eval_texts(), batch)?)?;
    let names: Vec<&str> = sets.labels.iter().map(String::as_str).collect();
    let score = match score_texts {
        Some(texts) => {
            let logits: Vec<Vec<f32>> = trained.logits(&encoder_features(enc, texts, batch)?)?.to_vec2()?;
            Some(score_summary(&logits, &sets.labels)?)
        }
        None => None,
    };
    Ok(ProbeOutcome {
        classes: sets.labels.clone(),
        n_train: sets.train.len(),
        n_test: sets.eval.len(),
        report: report(&sets.eval_y, &predicted, &names),
        score,
    })
}

/// Predicted shares and mean softmax probabilities of logit rows over `labels`.
pub fn score_summary(logits: &[Vec<f32>], labels: &[String]) -> Result<ScoreSummary> {
    let k = labels.len();
    if logits.is_empty() {
        return Err(GraftError::Input("no texts to score".into()));
    }
    let (mut counts, mut prob_sums) = (vec![0usize; k], vec![0f64; k]);
    for row in logits {
        if row.len() != k {
            return Err(GraftError::Input(format!("{} logits for {k} classes", row.len())));
        }
        counts[crate::eval::classification::argmax(row)] += 1;
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        for (sum, e) in prob_sums.iter_mut().zip(&exps) {
            *sum += e / total;
        }
    }
    let n = logits.len() as f64;
    let per_label = |values: Vec<f64>| labels.iter().cloned().zip(values).collect::<BTreeMap<_, _>>();
    Ok(ScoreSummary {
        n: logits.len(),
        predicted_share: per_label(counts.iter().map(|&c| c as f64 / n).collect()),
        mean_probability: per_label(prob_sums.iter().map(|s| s / n).collect()),
    })
}

/// Retrieval of `targets[i]` for `queries[i]` among all targets by cosine similarity of the
/// encoder's embeddings. `batch` texts per forward pass.
pub fn retrieval(
    enc: &SentenceEncoder,
    queries: &[String],
    targets: &[String],
    batch: usize,
) -> Result<RetrievalScores> {
    if queries.len() != targets.len() {
        return Err(GraftError::Input(format!("{} queries for {} targets", queries.len(), targets.len())));
    }
    retrieval_scores(&encoder_features(enc, queries, batch)?, &encoder_features(enc, targets, batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_summary_by_hand() {
        let labels = vec!["a".to_string(), "b".to_string()];
        // Row 1: equal logits (probabilities 1/2, argmax the first); row 2: b by ln 3 (1/4, 3/4).
        let s = score_summary(&[vec![0.0, 0.0], vec![0.0, 3f32.ln()]], &labels).unwrap();
        assert_eq!(s.n, 2);
        assert_eq!((s.predicted_share["a"], s.predicted_share["b"]), (0.5, 0.5));
        assert!((s.mean_probability["a"] - 0.375).abs() < 1e-7);
        assert!((s.mean_probability["b"] - 0.625).abs() < 1e-7);
        assert!(score_summary(&[vec![1.0]], &labels).is_err());
    }
}
