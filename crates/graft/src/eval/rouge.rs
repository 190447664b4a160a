//! ROUGE-1, ROUGE-2 and ROUGE-L between a generated text and a reference, computed as the
//! `rouge-score` package does by default (no stemming).
//!
//! Tokens: the text is lower-cased, every character outside `a-z0-9` becomes a separator, and
//! the remaining runs are the tokens (`"It's 2024!"` → `it`, `s`, `2024`; non-ASCII letters are
//! separators, as in `rouge-score`: `"café"` → `caf`). rouge-score's optional Porter stemming
//! (`use_stemmer=True`) is not applied.
//!
//! - ROUGE-N: with `c(g)` the count of n-gram `g`, `overlap = Σ_g min(c_pred(g), c_ref(g))`,
//!   `P = overlap / max(#pred n-grams, 1)`, `R = overlap / max(#ref n-grams, 1)`.
//! - ROUGE-L: `lcs` = length of the longest common subsequence of the token lists,
//!   `P = lcs / #pred tokens`, `R = lcs / #ref tokens`; all 0 when either list is empty.
//! - `F1 = 2PR / (P + R)`, 0 when `P + R = 0`.

use serde::Serialize;
use std::collections::HashMap;

/// Precision, recall and F1 of one ROUGE variant, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeScore {
    /// Matched units / units in the prediction.
    pub precision: f64,
    /// Matched units / units in the reference.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Self { precision, recall, f1 }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one prediction (or their means over a set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeScores {
    /// Unigram overlap.
    pub rouge1: RougeScore,
    /// Bigram overlap.
    pub rouge2: RougeScore,
    /// Longest common subsequence.
    #[serde(rename = "rougeL")]
    pub rouge_l: RougeScore,
}

/// rouge-score's default tokens: lower-case, runs of `a-z0-9`.
pub fn rouge_tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// ROUGE-N of token lists (`n ≥ 1`; `n = 0` scores 0).
pub fn rouge_n(prediction: &[String], reference: &[String], n: usize) -> RougeScore {
    if n == 0 {
        return RougeScore::default();
    }
    let counts = |tokens: &[String]| -> HashMap<Vec<String>, usize> {
        let mut map = HashMap::new();
        for gram in tokens.windows(n) {
            *map.entry(gram.to_vec()).or_insert(0) += 1;
        }
        map
    };
    let (pred, reference) = (counts(prediction), counts(reference));
    let overlap: usize = pred.iter().map(|(g, &c)| c.min(reference.get(g).copied().unwrap_or(0))).sum();
    let n_pred: usize = pred.values().sum();
    let n_ref: usize = reference.values().sum();
    RougeScore::new(overlap as f64 / n_pred.max(1) as f64, overlap as f64 / n_ref.max(1) as f64)
}

/// Length of the longest common subsequence of two token lists (O(|a|·|b|) time, O(|b|) memory).
pub fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of token lists.
pub fn rouge_l(prediction: &[String], reference: &[String]) -> RougeScore {
    if prediction.is_empty() || reference.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_len(prediction, reference) as f64;
    RougeScore::new(lcs / prediction.len() as f64, lcs / reference.len() as f64)
}

/// ROUGE-1/2/L of `prediction` against one `reference`.
pub fn rouge(prediction: &str, reference: &str) -> RougeScores {
    let (p, r) = (rouge_tokenize(prediction), rouge_tokenize(reference));
    RougeScores { rouge1: rouge_n(&p, &r, 1), rouge2: rouge_n(&p, &r, 2), rouge_l: rouge_l(&p, &r) }
}

/// ROUGE against several references: for each variant, the score of the reference with the
/// highest F1 (rouge-score's `score_multi`). No reference scores 0.
pub fn rouge_max<S: AsRef<str>>(prediction: &str, references: &[S]) -> RougeScores {
    let all: Vec<RougeScores> = references.iter().map(|r| rouge(prediction, r.as_ref())).collect();
    let best = |get: fn(&RougeScores) -> RougeScore| -> RougeScore {
        all.iter().map(get).fold(RougeScore::default(), |a, b| if b.f1 > a.f1 { b } else { a })
    };
    RougeScores { rouge1: best(|s| s.rouge1), rouge2: best(|s| s.rouge2), rouge_l: best(|s| s.rouge_l) }
}

/// Mean of each precision, recall and F1 over `scores` (all 0 for an empty slice).
pub fn mean_rouge(scores: &[RougeScores]) -> RougeScores {
    let n = scores.len().max(1) as f64;
    let mean = |get: fn(&RougeScores) -> RougeScore| -> RougeScore {
        let sum = scores.iter().map(get).fold((0.0, 0.0, 0.0), |a, s| (a.0 + s.precision, a.1 + s.recall, a.2 + s.f1));
        RougeScore { precision: sum.0 / n, recall: sum.1 / n, f1: sum.2 / n }
    };
    RougeScores { rouge1: mean(|s| s.rouge1), rouge2: mean(|s| s.rouge2), rouge_l: mean(|s| s.rouge_l) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: RougeScore, p: f64, r: f64, f: f64) {
        let ok = (got.precision - p).abs() < 1e-12 && (got.recall - r).abs() < 1e-12 && (got.f1 - f).abs() < 1e-12;
        assert!(ok, "got {got:?}, expected P {p} R {r} F {f}");
    }

    #[test]
    fn tokens_are_lowercase_ascii_alphanumeric_runs() {
        assert_eq!(rouge_tokenize("Hello, World! It's 2024."), ["hello", "world", "it", "s", "2024"]);
        // Non-ASCII letters separate tokens, as in rouge-score's `[^a-z0-9]+` pattern.
        assert_eq!(rouge_tokenize("Café ÜBER-cool"), ["caf", "ber", "cool"]);
        assert!(rouge_tokenize(" \t…!? ").is_empty());
    }

    #[test]
    fn hand_computed_overlaps() {
        // pred: the cat sat on the mat (6 tokens); ref: the cat is on the mat (6).
        let s = rouge("The cat sat on the mat.", "the cat is on the mat");
        // Unigrams: the×2, cat, on, mat shared → 5; P = R = F = 5/6.
        close(s.rouge1, 5.0 / 6.0, 5.0 / 6.0, 5.0 / 6.0);
        // Bigrams (5 each): the-cat, on-the, the-mat shared → 3; P = R = F = 3/5.
        close(s.rouge2, 0.6, 0.6, 0.6);
        // LCS: the cat on the mat = 5; P = R = F = 5/6.
        close(s.rouge_l, 5.0 / 6.0, 5.0 / 6.0, 5.0 / 6.0);

        // pred a b c d, ref a b. ROUGE-1: overlap 2, P 2/4, R 2/2, F = 2·0.5·1/1.5 = 2/3.
        let s = rouge("a b c d", "a b");
        close(s.rouge1, 0.5, 1.0, 2.0 / 3.0);
        // ROUGE-2: pred ab bc cd, ref ab: overlap 1, P 1/3, R 1, F = 2·(1/3)/(4/3) = 1/2.
        close(s.rouge2, 1.0 / 3.0, 1.0, 0.5);
        // LCS a b = 2: P 1/2, R 1, F 2/3.
        close(s.rouge_l, 0.5, 1.0, 2.0 / 3.0);
    }

    #[test]
    fn counts_are_clipped_and_order_matters_only_for_lcs() {
        // pred the×3, ref the×1: overlap min(3, 1) = 1; P 1/3, R 1, F = 2·(1/3)/(4/3) = 1/2.
        close(rouge("the the the", "the").rouge1, 1.0 / 3.0, 1.0, 0.5);
        // Reversed order: every unigram matches (P = R = F = 1), no bigram does, LCS = 1 → 1/3.
        let s = rouge("a b c", "c b a");
        close(s.rouge1, 1.0, 1.0, 1.0);
        close(s.rouge2, 0.0, 0.0, 0.0);
        close(s.rouge_l, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0);
    }

    #[test]
    fn empty_texts_score_zero() {
        for (p, r) in [("", "a"), ("a", ""), ("", ""), ("!!!", "a")] {
            let s = rouge(p, r);
            for v in [s.rouge1, s.rouge2, s.rouge_l] {
                close(v, 0.0, 0.0, 0.0);
            }
        }
        // One token: no bigram at all, so ROUGE-2 is 0 even for identical texts.
        close(rouge("cat", "cat").rouge2, 0.0, 0.0, 0.0);
    }

    #[test]
    fn best_reference_and_mean() {
        // vs "a dog": nothing shared. vs "the cat sat": overlap 2, P 2/2, R 2/3, F = 2·(2/3)/(5/3) = 0.8.
        let s = rouge_max("the cat", &["a dog", "the cat sat"]);
        close(s.rouge1, 1.0, 2.0 / 3.0, 0.8);
        // Bigram the-cat: P 1/1, R 1/2, F 2/3.
        close(s.rouge2, 1.0, 0.5, 2.0 / 3.0);
        close(rouge_max::<&str>("x", &[]).rouge1, 0.0, 0.0, 0.0);
        // Mean of F1 1 (identical) and 0 (disjoint) is 1/2.
        let m = mean_rouge(&[rouge("a b", "a b"), rouge("a b", "c d")]);
        close(m.rouge1, 0.5, 0.5, 0.5);
    }
}
