//! SQuAD exact match and token F1, as the official SQuAD v2.0 evaluation script computes them.
//!
//! Normalisation (`normalize_answer`), in this order: lower-case; delete ASCII punctuation
//! (Python's `string.punctuation`, ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``); replace the articles
//! `a`, `an`, `the` standing as whole words (`\b(a|an|the)\b`: a maximal run of word
//! characters, i.e. Unicode alphanumerics) by a space; collapse whitespace runs to one space and
//! trim.
//!
//! - Exact match: 1 when the normalised prediction equals the normalised gold answer, else 0.
//! - Token F1: tokens are the whitespace-separated words of the normalised text;
//!   `common = Σ_w min(count_pred(w), count_gold(w))`, `P = common / #pred`,
//!   `R = common / #gold`, `F1 = 2PR / (P + R)` (0 when `common = 0`). When either side has no
//!   token, F1 is 1 if both have none, else 0 (the v2.0 rule for unanswerable questions).
//! - Several gold answers: gold answers that normalise to the empty string are dropped; if none
//!   is left the gold is `[""]` (unanswerable); the score is the maximum over the gold answers.
//!
//! Scores are fractions in `[0, 1]`; the official script reports them ×100.

use serde::Serialize;
use std::collections::HashMap;

/// Mean exact match and token F1 over a set of questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SquadScores {
    /// Share of questions whose prediction matches a gold answer exactly (after normalisation).
    pub exact_match: f64,
    /// Mean of the per-question best token F1.
    pub f1: f64,
    /// Number of questions.
    pub n: usize,
}

/// Characters Python's `str.split()` splits on: Unicode whitespace plus the ASCII information
/// separators U+001C..U+001F, which Python also counts as space.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The words of `\w` in Python's Unicode regexes: alphanumerics and `_`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// SQuAD's `normalize_answer`: lower-case, no ASCII punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let text: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    // Replace maximal runs of word characters that are exactly an article.
    let mut no_articles = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    no_articles.split(is_python_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The normalised words of `s`.
fn tokens(s: &str) -> Vec<String> {
    normalize_answer(s).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// The gold answers scored against: those with a non-empty normalisation, or `[""]`.
fn usable_golds<S: AsRef<str>>(golds: &[S]) -> Vec<&str> {
    let kept: Vec<&str> = golds.iter().map(AsRef::as_ref).filter(|g| !normalize_answer(g).is_empty()).collect();
    if kept.is_empty() {
        vec![""]
    } else {
        kept
    }
}

/// Token F1 of `prediction` against one gold answer.
fn f1_one(prediction: &[String], gold: &[String]) -> f64 {
    if prediction.is_empty() || gold.is_empty() {
        return if prediction.is_empty() && gold.is_empty() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in gold {
        *counts.entry(w).or_insert(0) += 1;
    }
    let mut common = 0usize;
    for w in prediction {
        if let Some(c) = counts.get_mut(w.as_str()).filter(|c| **c > 0) {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (p, r) = (common as f64 / prediction.len() as f64, common as f64 / gold.len() as f64);
    2.0 * p * r / (p + r)
}

/// 1 when `prediction` equals one of `golds` after normalisation, else 0.
pub fn exact_match<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    let pred = normalize_answer(prediction);
    let hit = usable_golds(golds).iter().any(|g| normalize_answer(g) == pred);
    if hit {
        1.0
    } else {
        0.0
    }
}

/// The best token F1 of `prediction` over `golds`.
pub fn token_f1<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    let pred = tokens(prediction);
    usable_golds(golds).iter().map(|g| f1_one(&pred, &tokens(g))).fold(0.0, f64::max)
}

/// Mean exact match and F1 of `predictions[i]` against `golds[i]`; the two lists must have the
/// same length.
pub fn squad_scores<P: AsRef<str>, G: AsRef<str>>(predictions: &[P], golds: &[Vec<G>]) -> crate::Result<SquadScores> {
    if predictions.len() != golds.len() {
        return Err(crate::GraftError::Input(format!(
            "{} predictions for {} questions: give one prediction per question",
            predictions.len(),
            golds.len()
        )));
    }
    let n = predictions.len();
    let (mut em, mut f1) = (0.0, 0.0);
    for (p, g) in predictions.iter().zip(golds) {
        em += exact_match(p.as_ref(), g);
        f1 += token_f1(p.as_ref(), g);
    }
    let d = n.max(1) as f64;
    Ok(SquadScores { exact_match: em / d, f1: f1 / d, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn normalisation_steps() {
        // lower → "the  quick, brown fox!" → no punctuation → "the  quick brown fox" → article
        // replaced by a space → whitespace collapsed.
        assert_eq!(normalize_answer("The  Quick, Brown fox!"), "quick brown fox");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        // Articles only as whole words: "theatre", "anthem" and "a1" stay.
        assert_eq!(normalize_answer("Theatre anthem a1"), "theatre anthem a1");
        // Punctuation goes first, so "A.N." becomes the article "an" and disappears.
        assert_eq!(normalize_answer("A.N."), "");
        // Non-ASCII punctuation is kept and is a word boundary: "«the»" → "« »" → "« »".
        assert_eq!(normalize_answer("«the» Straße"), "« » straße");
        assert_eq!(normalize_answer("a\u{1f}b\t\n c"), "b c");
    }

    #[test]
    fn exact_match_and_f1_by_hand() {
        close(exact_match("the Eiffel Tower", &["Eiffel Tower"]), 1.0);
        // pred eiffel tower in paris (4), gold eiffel tower (2): common 2, P 2/4, R 2/2,
        // F1 = 2·0.5·1/1.5 = 2/3.
        close(token_f1("Eiffel Tower in Paris", &["the Eiffel Tower"]), 2.0 / 3.0);
        close(exact_match("Eiffel Tower in Paris", &["the Eiffel Tower"]), 0.0);
        // Repeated words are clipped: pred cat cat cat (the articles removed), gold cat cat dog:
        // common min(3, 2) = 2, P 2/3, R 2/3, F1 2/3.
        close(token_f1("the the cat cat cat", &["cat cat dog"]), 2.0 / 3.0);
    }

    #[test]
    fn best_of_several_gold_answers() {
        // pred paris france. vs "Paris": common 1, P 1/2, R 1, F1 2/3; vs "France": same;
        // vs "in Paris, France" (in paris france): common 2, P 2/2, R 2/3, F1 = 2·(2/3)/(5/3) = 0.8.
        let golds = ["Paris", "France", "in Paris, France"];
        close(token_f1("Paris France", &golds), 0.8);
        close(exact_match("Paris France", &golds), 0.0);
        close(exact_match("france", &golds), 1.0);
    }

    #[test]
    fn empty_predictions_and_answers() {
        // Empty prediction vs a real answer: no tokens on one side → 0.
        close(token_f1("", &["Paris"]), 0.0);
        close(exact_match("", &["Paris"]), 0.0);
        // No gold answer means unanswerable (gold [""]): an empty prediction, or one that
        // normalises to nothing ("The."), scores 1 on both.
        for pred in ["", "The."] {
            close(exact_match::<&str>(pred, &[]), 1.0);
            close(token_f1::<&str>(pred, &[]), 1.0);
        }
        // Gold answers that normalise to "" are dropped: ["", "Paris"] scores like ["Paris"];
        // ["a"] is unanswerable, so "Paris" scores 0 against it.
        close(exact_match("", &["", "Paris"]), 0.0);
        close(token_f1("Paris", &["a"]), 0.0);
    }

    #[test]
    fn corpus_means() {
        // Question 1: EM 1, F1 1. Question 2: EM 0, F1 2/3 (above). Means: EM 1/2, F1 5/6.
        let s = squad_scores(
            &["the eiffel tower", "Eiffel Tower in Paris"],
            &[vec!["Eiffel Tower"], vec!["the Eiffel Tower"]],
        )
        .unwrap();
        close(s.exact_match, 0.5);
        close(s.f1, 5.0 / 6.0);
        assert_eq!(s.n, 2);
        assert!(squad_scores(&["x"], &Vec::<Vec<&str>>::new()).is_err());
    }
}
