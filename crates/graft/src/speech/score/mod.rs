//! Scoring transcripts: word and character error rates after a documented text normaliser, per
//! language and overall, each with a bootstrap 95 % confidence interval.
//!
//! - [`normalize`](mod@normalize): Whisper's multilingual `BasicTextNormalizer` rules (diacritics kept);
//! - [`align`](mod@align): Levenshtein alignment counting substitutions, deletions and insertions;
//! - [`bootstrap`]: the percentile bootstrap of a corpus rate over utterances;
//! - [`manifest`]: references from a speech manifest paired with a hypotheses file by `audio`.
//!
//! A corpus rate is the sum of the utterances' edits over the sum of their reference lengths
//! (not the mean of per-utterance rates), as jiwer and the Hugging Face `wer` metric compute it.

pub mod align;
pub mod bootstrap;
pub mod manifest;
pub mod normalize;

pub use align::{align, EditCounts};
pub use normalize::normalize;

use crate::{GraftError, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// The name of the normaliser, written into every score report.
pub const NORMALISER: &str = "whisper-basic";

/// One scored utterance's input: its language, the reference transcript and the hypothesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utterance {
    /// Language code of the utterance (`de`, `es`, ...), the key of the per-language breakdown.
    pub language: String,
    /// What was said, as written in the manifest.
    pub reference: String,
    /// What the system transcribed.
    pub hypothesis: String,
}

/// Word and character edit counts of one utterance, after normalisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UtteranceScore {
    /// Over the normalised words (split at spaces).
    pub words: EditCounts,
    /// Over the characters (Unicode scalar values) of the normalised text, single spaces
    /// between words included, as jiwer's `cer` counts them.
    pub chars: EditCounts,
}

impl UtteranceScore {
    fn measures(&self) -> [EditCounts; 2] {
        [self.words, self.chars]
    }
}

/// Normalises `reference` and `hypothesis` ([`normalize()`]) and aligns their words and characters.
/// A reference that normalises to nothing counts every hypothesis word and character as an
/// insertion and adds nothing to the reference length.
pub fn score_utterance(reference: &str, hypothesis: &str) -> UtteranceScore {
    let (r, h) = (normalize(reference), normalize(hypothesis));
    let rw: Vec<&str> = r.split(' ').filter(|w| !w.is_empty()).collect();
    let hw: Vec<&str> = h.split(' ').filter(|w| !w.is_empty()).collect();
    let rc: Vec<char> = r.chars().collect();
    let hc: Vec<char> = h.chars().collect();
    UtteranceScore { words: align(&rw, &hw), chars: align(&rc, &hc) }
}

/// How the confidence intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BootstrapOptions {
    /// Resamples of the utterances (1,000 by default).
    pub resamples: usize,
    /// Seed of the resampling; every group uses it, so a language's interval does not depend on
    /// which other languages are scored with it.
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self { resamples: 1000, seed: 42 }
    }
}

/// The scores of a group of utterances (one language, or all).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScore {
    /// Utterances in the group.
    pub utterances: usize,
    /// Normalised reference words.
    pub ref_words: usize,
    /// Word substitutions.
    pub substitutions: usize,
    /// Word deletions.
    pub deletions: usize,
    /// Word insertions.
    pub insertions: usize,
    /// Word error rate: (substitutions + deletions + insertions) / ref_words.
    pub wer: f64,
    /// Bootstrap 95 % interval of `wer`: [lower, upper].
    pub wer_ci95: [f64; 2],
    /// Characters of the normalised references (spaces between words included).
    pub ref_chars: usize,
    /// Character substitutions.
    pub char_substitutions: usize,
    /// Character deletions.
    pub char_deletions: usize,
    /// Character insertions.
    pub char_insertions: usize,
    /// Character error rate: character edits / ref_chars.
    pub cer: f64,
    /// Bootstrap 95 % interval of `cer`: [lower, upper].
    pub cer_ci95: [f64; 2],
}

/// A scored set: per language and overall, with how it was scored. The JSON shape of
/// `graft speech score --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    /// The text normaliser ([`NORMALISER`]).
    pub normaliser: String,
    /// The bootstrap's resamples and seed.
    pub bootstrap: BootstrapOptions,
    /// Per language code, in code order.
    pub languages: BTreeMap<String, GroupScore>,
    /// All utterances together (resampled together for the intervals).
    pub overall: GroupScore,
}

/// Scores `utterances` per language and overall.
///
/// Errors when there is nothing to score, or when a language's references have no word after
/// normalisation (its rates are undefined).
pub fn score(utterances: &[Utterance], opts: &BootstrapOptions) -> Result<ScoreReport> {
    if utterances.is_empty() {
        return Err(GraftError::Input("nothing to score: no utterances".into()));
    }
    let scored: Vec<(&str, UtteranceScore)> =
        utterances.iter().map(|u| (u.language.as_str(), score_utterance(&u.reference, &u.hypothesis))).collect();
    let mut by_language: BTreeMap<&str, Vec<UtteranceScore>> = BTreeMap::new();
    for (lang, s) in &scored {
        by_language.entry(lang).or_default().push(*s);
    }
    let mut languages = BTreeMap::new();
    for (lang, scores) in by_language {
        languages.insert(lang.to_string(), group(&scores, opts, &format!("language `{lang}`"))?);
    }
    let all: Vec<UtteranceScore> = scored.iter().map(|(_, s)| *s).collect();
    let overall = group(&all, opts, "the set")?;
    Ok(ScoreReport { normaliser: NORMALISER.into(), bootstrap: *opts, languages, overall })
}

/// The corpus rates and intervals of one group; `what` names the group in errors.
fn group(scores: &[UtteranceScore], opts: &BootstrapOptions, what: &str) -> Result<GroupScore> {
    let (mut w, mut c) = (EditCounts::default(), EditCounts::default());
    for s in scores {
        w += s.words;
        c += s.chars;
    }
    let (Some(wer), Some(cer)) = (w.rate(), c.rate()) else {
        return Err(GraftError::Input(format!(
            "{what}: {} utterance(s) whose references have no words after normalisation; WER is undefined",
            scores.len()
        )));
    };
    let measures: Vec<[EditCounts; 2]> = scores.iter().map(UtteranceScore::measures).collect();
    let [wer_ci95, cer_ci95] = bootstrap::ci95(&measures, opts.resamples, opts.seed)?;
    Ok(GroupScore {
        utterances: scores.len(),
        ref_words: w.reference,
        substitutions: w.substitutions,
        deletions: w.deletions,
        insertions: w.insertions,
        wer,
        wer_ci95,
        ref_chars: c.reference,
        char_substitutions: c.substitutions,
        char_deletions: c.deletions,
        char_insertions: c.insertions,
        cer,
        cer_ci95,
    })
}

/// A plain-text table of a report: one row per language and one for all, rates in percent.
pub fn table(report: &ScoreReport) -> String {
    let mut out = format!(
        "{:<8} {:>6} {:>7} {:>7} {:>17} {:>7} {:>17}\n",
        "language", "utts", "words", "WER %", "95 % CI", "CER %", "95 % CI"
    );
    let rows = report.languages.iter().map(|(l, g)| (l.as_str(), g)).chain([("all", &report.overall)]);
    for (lang, g) in rows {
        let ci = |c: [f64; 2]| format!("[{:.2}, {:.2}]", 100.0 * c[0], 100.0 * c[1]);
        out.push_str(&format!(
            "{lang:<8} {:>6} {:>7} {:>7.2} {:>17} {:>7.2} {:>17}\n",
            g.utterances,
            g.ref_words,
            100.0 * g.wer,
            ci(g.wer_ci95),
            100.0 * g.cer,
            ci(g.cer_ci95)
        ));
    }
    out
}
