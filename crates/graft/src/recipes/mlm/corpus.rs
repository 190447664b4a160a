//! The texts of a masked-LM corpus, tokenized for the encoder.

use crate::data::read_texts;
use crate::models::bert::SentenceEncoder;
use crate::objectives::masking::MaskVocab;
use crate::{GraftError, Result};
use std::path::Path;

/// The texts of `path`: a plain-text file (`.txt`) gives one text per paragraph (lines
/// separated by blank lines, joined with spaces); anything else is read as JSONL `text` records.
pub fn read_corpus(path: &Path) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
        let mut paragraphs = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        for line in text.lines().map(str::trim).chain([""]) {
            if line.is_empty() {
                if !current.is_empty() {
                    paragraphs.push(current.join(" "));
                    current.clear();
                }
            } else {
                current.push(line);
            }
        }
        return Ok(paragraphs);
    }
    Ok(read_texts(path)?)
}

/// Token ids of every text that has something to mask, and how many texts were dropped for
/// having nothing (empty, or special tokens only) and how many were truncated.
pub struct Tokenized {
    /// Each kept text's ids, special tokens included.
    pub ids: Vec<Vec<u32>>,
    /// Texts without a maskable token.
    pub dropped: usize,
    /// Texts cut to the encoder's length limit.
    pub truncated: usize,
}

/// Tokenizes `texts` with `enc` (truncating to its length limit); an error when no text has a
/// token to mask. `what` names the corpus in that error.
pub fn tokenize(enc: &SentenceEncoder, vocab: &MaskVocab, texts: &[String], what: &str) -> Result<Tokenized> {
    let (mut ids, mut dropped, mut truncated) = (Vec::with_capacity(texts.len()), 0, 0);
    for t in texts {
        let tok = enc.tokenize(t)?;
        truncated += usize::from(tok.truncated);
        if tok.ids.iter().any(|&id| vocab.maskable(id)) {
            ids.push(tok.ids);
        } else {
            dropped += 1;
        }
    }
    if ids.is_empty() {
        return Err(GraftError::Input(format!(
            "{what} has no text with a token to mask ({} texts, all empty or special tokens only)",
            texts.len()
        )));
    }
    Ok(Tokenized { ids, dropped, truncated })
}
