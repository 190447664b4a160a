//! What speech fine-tuning reads: the clips of a speech manifest (`graft data build speech`'s
//! `{"audio", "text", "language", ...}` lines), each turned into the token sequence Whisper is
//! trained on — the transcribe prompt, the transcript, end of text — and into encoder input.
//!
//! The sequence follows the Hugging Face Whisper fine-tuning recipe and what the models were
//! trained on: `<|startoftranscript|><|xx|><|transcribe|><|notimestamps|>` (multilingual
//! models; `<|startoftranscript|><|notimestamps|>` for English-only ones, whatever the
//! language), then the transcript with a leading space (as the models generate it), then
//! `<|endoftext|>`. The loss covers the transcript and end of text, never the prompt.

use super::decode::WhisperTokens;
use crate::datasets::task_files::{for_each_line, string_field};
use crate::{GraftError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One clip of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechClip {
    /// The manifest's `audio` field, as written (the key hypotheses files match on).
    pub key: String,
    /// The audio file (the manifest's `audio`, relative paths resolved against the manifest's
    /// folder).
    pub path: PathBuf,
    /// The reference transcript.
    pub text: String,
    /// The language code (`de`).
    pub language: String,
}

/// The clips of `manifest` in file order, only those of `languages` when it is not empty, and
/// at most `limit` per language (the first ones; 0 keeps all). Every line needs string fields
/// `audio`, `text` and `language`; a repeated `audio` is an error naming the line.
pub fn read_clips(manifest: &Path, languages: &[String], limit: usize) -> Result<Vec<SpeechClip>> {
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut clips = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_language: BTreeMap<String, usize> = BTreeMap::new();
    for_each_line(manifest, &mut |line, v| {
        let at = format!("{}:{line}", manifest.display());
        let key = string_field(v, "audio", &at)?;
        let text = string_field(v, "text", &at)?;
        let language = string_field(v, "language", &at)?;
        if let Some(first) = seen.insert(key.to_string(), line) {
            return Err(GraftError::Input(format!("{at}: audio `{key}` is already listed on line {first}")));
        }
        if !languages.is_empty() && !languages.iter().any(|l| l == language) {
            return Ok(());
        }
        let n = per_language.entry(language.to_string()).or_default();
        if limit > 0 && *n >= limit {
            return Ok(());
        }
        *n += 1;
        clips.push(SpeechClip {
            key: key.to_string(),
            path: base.join(key),
            text: text.to_string(),
            language: language.to_string(),
        });
        Ok(())
    })?;
    if clips.is_empty() {
        let which = if languages.is_empty() { String::new() } else { format!(" in languages {languages:?}") };
        return Err(GraftError::Input(format!("{}: no clip{which}", manifest.display())));
    }
    Ok(clips)
}

/// A clip's training sequence: `ids` (prompt, transcript, end of text) and how many of them are
/// prompt (the loss starts at the token after the prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSequence {
    /// Every token, prompt first.
    pub ids: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_len: usize,
}

/// Builds the training sequence of `text` in `language` (see the module documentation);
/// `multilingual` picks the prompt. Sequences longer than `max_len` tokens (the decoder's
/// positions) are an error naming the clip.
pub fn target_sequence(
    tokens: &WhisperTokens,
    tokenizer: &tokenizers::Tokenizer,
    clip: &SpeechClip,
    multilingual: bool,
    max_len: usize,
) -> Result<TargetSequence> {
    let prompt = tokens.transcribe_prompt(multilingual.then_some(clip.language.as_str()))?;
    let encoding = tokenizer
        .encode(format!(" {}", clip.text.trim()), false)
        .map_err(|e| GraftError::Input(format!("{}: cannot tokenize the transcript: {e}", clip.key)))?;
    let mut ids = prompt.clone();
    ids.extend_from_slice(encoding.get_ids());
    ids.push(tokens.eot);
    if ids.len() > max_len {
        return Err(GraftError::Input(format!(
            "{}: prompt and transcript take {} tokens, more than the decoder's {max_len} positions",
            clip.key,
            ids.len()
        )));
    }
    Ok(TargetSequence { ids, prompt_len: prompt.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(lines: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        (dir, path)
    }

    #[test]
    fn keeps_languages_and_limits_per_language() {
        let (dir, path) = manifest(&[
            r#"{"audio": "a/1.wav", "text": "eins", "language": "de"}"#,
            r#"{"audio": "a/2.wav", "text": "uno", "language": "es"}"#,
            r#"{"audio": "a/3.wav", "text": "zwei", "language": "de"}"#,
            r#"{"audio": "a/4.wav", "text": "drei", "language": "de"}"#,
        ]);
        let clips = read_clips(&path, &["de".into()], 2).unwrap();
        let keys: Vec<&str> = clips.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["a/1.wav", "a/3.wav"]);
        assert_eq!(clips[0].path, dir.path().join("a/1.wav"));
        assert_eq!(read_clips(&path, &[], 0).unwrap().len(), 4);
        let err = read_clips(&path, &["fr".into()], 0).unwrap_err().to_string();
        assert!(err.contains("no clip in languages [\"fr\"]"), "{err}");
    }

    #[test]
    fn bad_lines_name_the_line() {
        let (_dir, path) = manifest(&[
            r#"{"audio": "a/1.wav", "text": "eins", "language": "de"}"#,
            r#"{"audio": "a/1.wav", "text": "zwei", "language": "de"}"#,
        ]);
        let err = read_clips(&path, &[], 0).unwrap_err().to_string();
        assert!(err.contains("train.jsonl:2") && err.contains("already listed on line 1"), "{err}");
        let (_dir, path) = manifest(&[r#"{"audio": "a/1.wav", "language": "de"}"#]);
        let err = read_clips(&path, &[], 0).unwrap_err().to_string();
        assert!(err.contains("train.jsonl:1") && err.contains("text"), "{err}");
    }
}
