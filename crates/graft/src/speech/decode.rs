//! Whisper decoding: the special tokens of a model, the prompt that asks for a transcript,
//! language detection, and greedy decoding with Whisper's token suppression, as CTranslate2's
//! `Whisper.generate` and `Whisper.detect_language` do them.
//!
//! - The prompt is `<|startoftranscript|><|xx|><|transcribe|><|notimestamps|>` for a
//!   multilingual model (`xx` the language) and `<|startoftranscript|><|notimestamps|>` for an
//!   English-only one.
//! - Language detection feeds `<|startoftranscript|>` alone and takes the softmax of the next
//!   token's logits over the language tokens only (config.json `lang_ids`).
//! - Greedy decoding takes the most likely token at each step after masking the suppressed
//!   tokens (config.json `suppress_ids`, at every step, and `suppress_ids_begin`, the blank and
//!   end of text, at the first generated position), until end of text or a length limit.

use std::path::Path;

use candle_core::{DType, Tensor};

use crate::io::ctranslate2::whisper::{WhisperConfig, WhisperFolder};
use crate::models::whisper::{Whisper, WhisperCache};
use crate::{GraftError, Result};

/// The special tokens decoding needs, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperTokens {
    /// The vocabulary, one token per id.
    vocab: Vec<String>,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|transcribe|>`.
    pub transcribe: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
}

impl WhisperTokens {
    /// Reads `vocabulary.txt` (one token per line, in id order) of a Whisper folder.
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
        Self::from_vocab(text.lines().map(str::to_string).collect())
            .map_err(|missing| GraftError::model(path, format!("has no `{missing}` token; not a Whisper vocabulary")))
    }

    /// The vocabulary of a Hugging Face `tokenizer.json` (`path`, loaded as `tokenizer`), ids
    /// `0..vocab_size` (an id without a token gets an empty one), for folders without
    /// `vocabulary.txt`.
    pub fn from_tokenizer(tokenizer: &tokenizers::Tokenizer, vocab_size: usize, path: &Path) -> Result<Self> {
        let vocab = (0..vocab_size as u32).map(|i| tokenizer.id_to_token(i).unwrap_or_default()).collect();
        Self::from_vocab(vocab)
            .map_err(|missing| GraftError::model(path, format!("has no `{missing}` token; not a Whisper tokenizer")))
    }

    /// The special tokens of a vocabulary; the error is the first missing one.
    fn from_vocab(vocab: Vec<String>) -> std::result::Result<Self, &'static str> {
        let find = |token: &'static str| -> std::result::Result<u32, &'static str> {
            vocab.iter().position(|t| t == token).and_then(|i| u32::try_from(i).ok()).ok_or(token)
        };
        Ok(WhisperTokens {
            sot: find("<|startoftranscript|>")?,
            eot: find("<|endoftext|>")?,
            transcribe: find("<|transcribe|>")?,
            no_timestamps: find("<|notimestamps|>")?,
            vocab,
        })
    }

    /// The id of `token` (`<|de|>`), if the vocabulary has it.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.iter().position(|t| t == token).and_then(|i| u32::try_from(i).ok())
    }

    /// The token of `id`, if there is one.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    /// The prompt asking for a transcript without timestamps: in `language` (a code such as
    /// `de`) for a multilingual model, or for an English-only model with `None`.
    pub fn transcribe_prompt(&self, language: Option<&str>) -> Result<Vec<u32>> {
        Ok(match language {
            None => vec![self.sot, self.no_timestamps],
            Some(code) => {
                let lang = self
                    .id(&format!("<|{code}|>"))
                    .ok_or_else(|| GraftError::Input(format!("the model has no language token `<|{code}|>`")))?;
                vec![self.sot, lang, self.transcribe, self.no_timestamps]
            }
        })
    }
}

/// Settings of greedy decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreedyOptions {
    /// Most tokens generated after the prompt (end of text not counted).
    pub max_new_tokens: usize,
    /// The end-of-text token, which stops decoding.
    pub eot: u32,
    /// Tokens never generated.
    pub suppress: Vec<u32>,
    /// Tokens not generated at the first position.
    pub suppress_begin: Vec<u32>,
}

impl GreedyOptions {
    /// The options CTranslate2's `generate` uses by default for a folder (`suppress_tokens=[-1]`,
    /// `suppress_blank=True`), with at most `max_new_tokens` tokens.
    pub fn for_folder(config: &WhisperConfig, tokens: &WhisperTokens, max_new_tokens: usize) -> Self {
        GreedyOptions {
            max_new_tokens,
            eot: tokens.eot,
            suppress: config.suppress_ids.clone(),
            suppress_begin: config.suppress_ids_begin.clone(),
        }
    }

    /// The tokens CTranslate2 generates at most for `max_length` (its `generate` argument) and
    /// a prompt of `prompt_len` tokens: `min(max_length / 2, max_length - (prompt_len - 1))`.
    pub fn ct2_max_new_tokens(max_length: usize, prompt_len: usize) -> usize {
        (max_length / 2).min(max_length.saturating_sub(prompt_len.saturating_sub(1)))
    }
}

/// The most likely token of `logits` (`[vocab]`) once `masked` are excluded; the first of equal
/// maxima. `None` when every token is masked.
fn argmax_except(logits: &[f32], masked: &[&[u32]]) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        let id = i as u32;
        if masked.iter().any(|m| m.contains(&id)) || v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((id, v));
        }
    }
    best.map(|(id, _)| id)
}

/// The last position's logits of `[1, t, vocab]` as f32 values.
fn last_row(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(last_rows(logits)?.swap_remove(0))
}

/// Each row's last-position logits of `[b, t, vocab]` as f32 values, `b` rows.
pub(super) fn last_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = logits.dim(1)?;
    Ok(logits.narrow(1, t - 1, 1)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Greedy decoding of one audio: `audio` the encoder states `[1, frames, d]`, `prompt` the
/// prompt ids; returns the generated ids (without the prompt and the end of text).
pub fn greedy(model: &Whisper, audio: &Tensor, prompt: &[u32], opts: &GreedyOptions) -> Result<Vec<u32>> {
    if audio.dim(0)? != 1 || prompt.is_empty() {
        return Err(GraftError::Input("greedy decoding takes one audio and a non-empty prompt".into()));
    }
    let mut cache: WhisperCache = model.new_cache(audio)?;
    let ids = Tensor::new(prompt, model.device())?.unsqueeze(0)?;
    let mut logits = last_row(&model.decode_step(&ids, &mut cache)?)?;
    let mut out = Vec::new();
    while out.len() < opts.max_new_tokens {
        let begin: &[u32] = if out.is_empty() { &opts.suppress_begin } else { &[] };
        let Some(next) = argmax_except(&logits, &[&opts.suppress, begin]) else { break };
        if next == opts.eot || cache.len() >= model.dims.text_ctx {
            break;
        }
        out.push(next);
        let ids = Tensor::new(&[next], model.device())?.unsqueeze(0)?;
        logits = last_row(&model.decode_step(&ids, &mut cache)?)?;
    }
    Ok(out)
}

/// Language probabilities of one audio (`audio` `[1, frames, d]`): the next token after
/// `<|startoftranscript|>` restricted to the language tokens `lang_ids`, as
/// `(token id, probability)` from the most likely down.
pub fn detect_language(model: &Whisper, audio: &Tensor, sot: u32, lang_ids: &[u32]) -> Result<Vec<(u32, f32)>> {
    if lang_ids.is_empty() {
        return Err(GraftError::Input("the model lists no language tokens (config.json lang_ids)".into()));
    }
    let mut cache = model.new_cache(audio)?;
    let ids = Tensor::new(&[sot], model.device())?.unsqueeze(0)?;
    let logits = last_row(&model.decode_step(&ids, &mut cache)?)?;
    let scores = lang_ids
        .iter()
        .map(|&id| {
            logits.get(id as usize).map(|&v| f64::from(v)).ok_or_else(|| {
                GraftError::Input(format!("language token {id} is outside the vocabulary of {}", logits.len()))
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    let mut probs: Vec<(u32, f32)> =
        lang_ids.iter().zip(&scores).map(|(&id, s)| (id, ((s - max).exp() / total) as f32)).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(probs)
}

/// The special tokens of a Whisper folder.
pub fn folder_tokens(folder: &WhisperFolder) -> Result<WhisperTokens> {
    WhisperTokens::open(&folder.vocabulary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressed_tokens_are_skipped_and_ties_go_to_the_first() {
        let logits = [0.5, 3.0, 3.0, 1.0, f32::NAN];
        assert_eq!(argmax_except(&logits, &[]), Some(1));
        assert_eq!(argmax_except(&logits, &[&[1]]), Some(2));
        assert_eq!(argmax_except(&logits, &[&[1], &[2, 0]]), Some(3));
        assert_eq!(argmax_except(&logits, &[&[0, 1, 2, 3]]), None);
    }

    #[test]
    fn ctranslate2_length_limit() {
        assert_eq!(GreedyOptions::ct2_max_new_tokens(64, 4), 32);
        assert_eq!(GreedyOptions::ct2_max_new_tokens(448, 4), 224);
        assert_eq!(GreedyOptions::ct2_max_new_tokens(10, 8), 3);
    }

    #[test]
    fn a_vocabulary_without_the_special_tokens_is_refused() {
        let vocab = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(WhisperTokens::from_vocab(vocab(&["a", "<|endoftext|>"])).unwrap_err(), "<|startoftranscript|>");
        let t = WhisperTokens::from_vocab(vocab(&[
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|de|>",
            "<|transcribe|>",
            "<|notimestamps|>",
        ]))
        .unwrap();
        assert_eq!(t.transcribe_prompt(Some("de")).unwrap(), [1, 2, 3, 4]);
        assert_eq!(t.transcribe_prompt(None).unwrap(), [1, 4]);
        assert!(t.transcribe_prompt(Some("xx")).is_err());
    }
}
