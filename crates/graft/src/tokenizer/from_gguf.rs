//! Rebuilding a tokenizer from a GGUF file's `tokenizer.*` metadata.
//!
//! `tokenizer.ggml.model` says what the vocabulary is: `gpt2` (byte-level BPE, with
//! `tokenizer.ggml.merges` and a chunking named by `tokenizer.ggml.pre`) or `llama`
//! (SentencePiece-style, see `spm.rs`). The result is the tokenizer transformers builds when it
//! loads the same file, which is what graft's golden files were made with.

use super::pre_tokenizer::{self, byte_chars, is_byte_level, respell};
use super::{spm, Parts, TokenizerError};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub(crate) const TOKEN_TYPE_CONTROL: i64 = 3;
/// A token added by the user (matched in text, not special).
pub(crate) const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Typed access to GGUF metadata, with errors that name the file and key.
pub(crate) struct Meta<'a> {
    pub path: &'a Path,
    pub map: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    pub fn err(&self, key: &str, reason: impl Into<String>) -> TokenizerError {
        TokenizerError::Metadata { path: self.path.to_path_buf(), key: key.into(), reason: reason.into() }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(key, format!("expected a string, found {}", kind(other)))),
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, TokenizerError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => {
                as_int(v).map(Some).ok_or_else(|| self.err(key, format!("expected an integer, found {}", kind(v))))
            }
        }
    }

    pub fn id(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match self.int(key)? {
            None => Ok(None),
            Some(n) => {
                u32::try_from(n).map(Some).map_err(|_| self.err(key, format!("token id {n} is negative or too large")))
            }
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("expected a bool, found {}", kind(other)))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.err(key, format!("expected an array, found {}", kind(other)))),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.err(key, format!("element {i} is {}, not a string", kind(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, TokenizerError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| as_int(v).ok_or_else(|| self.err(key, format!("element {i} is {}, not an integer", kind(v)))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>, TokenizerError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                other => Err(self.err(key, format!("element {i} is {}, not a float", kind(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn as_int(v: &Value) -> Option<i64> {
    crate::io::gguf::value_as_int(v).and_then(|n| i64::try_from(n).ok())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::U8(_) | Value::I8(_) | Value::U16(_) | Value::I16(_) => "a small integer",
        Value::U32(_) | Value::I32(_) | Value::U64(_) | Value::I64(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::Bool(_) => "a bool",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    }
}

/// The special-token ids and flags every GGUF vocabulary declares the same way.
pub(crate) struct Declared {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_prefix_space: Option<bool>,
}

impl Declared {
    /// `default_add_bos` applies when the file does not say (llama.cpp: true for SentencePiece
    /// vocabularies, false for byte-level ones).
    fn read(meta: &Meta<'_>, n_tokens: usize, default_add_bos: bool) -> Result<Self, TokenizerError> {
        let id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match meta.id(key)? {
                Some(id) if id as usize >= n_tokens => {
                    Err(meta.err(key, format!("token id {id} is outside the vocabulary ({n_tokens} tokens)")))
                }
                other => Ok(other),
            }
        };
        Ok(Self {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            add_bos: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos),
            add_eos: meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_prefix_space: meta.bool("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

/// Reads the tokenizer of a GGUF file from its metadata.
pub(crate) fn parts(path: &Path, map: &HashMap<String, Value>) -> Result<Parts, TokenizerError> {
    let meta = Meta { path, map };
    let model_key = "tokenizer.ggml.model";
    let model = meta.string(model_key)?.ok_or_else(|| {
        meta.err(model_key, "missing: this GGUF file has no tokenizer; use a Hugging Face folder with tokenizer.json")
    })?;
    let tokens_key = "tokenizer.ggml.tokens";
    let tokens = meta.strings(tokens_key)?.ok_or_else(|| meta.err(tokens_key, "missing"))?;
    if tokens.is_empty() {
        return Err(meta.err(tokens_key, "the vocabulary is empty"));
    }
    let token_type = match meta.ints("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != tokens.len() => {
            return Err(
                meta.err("tokenizer.ggml.token_type", format!("{} entries for {} tokens", t.len(), tokens.len()))
            )
        }
        other => other,
    };
    let declared = Declared::read(&meta, tokens.len(), model == "llama")?;
    let inner = match model {
        "gpt2" => byte_level_bpe(&meta, &tokens, token_type.as_deref(), &declared)?,
        "llama" => spm::tokenizer(&meta, &tokens, token_type.as_deref(), &declared)?,
        other => {
            return Err(
                meta.err(model_key, format!("tokenizer model `{other}` is not supported (supported: gpt2, llama)"))
            )
        }
    };
    let chat_template = meta
        .string("tokenizer.chat_template")?
        .map(|source| (format!("{} (tokenizer.chat_template)", path.display()), source.to_string()));
    Ok(Parts {
        inner,
        bos: declared.bos,
        eos: declared.eos,
        pad: declared.pad,
        unk: declared.unk,
        add_bos: declared.add_bos,
        add_eos: declared.add_eos,
        chat_template,
        origin: path.to_path_buf(),
    })
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), assembled as transformers' GPT-2 converter
/// does: BPE without unknown token or byte fallback, the chunking of `tokenizer.ggml.pre`, a
/// byte-level decoder; control tokens become special added tokens, user-defined tokens plain
/// added tokens (matched in text, as llama.cpp does).
fn byte_level_bpe(
    meta: &Meta<'_>,
    tokens: &[&str],
    token_type: Option<&[i64]>,
    declared: &Declared,
) -> Result<Tokenizer, TokenizerError> {
    let table = byte_chars();
    let spelled: Vec<String> = tokens.iter().map(|t| respell(t, &table)).collect();
    // Later duplicates win, as in a Python dict built from the list.
    let vocab: Vocab = spelled.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();

    let merges_key = "tokenizer.ggml.merges";
    let raw_merges = meta
        .strings(merges_key)?
        .ok_or_else(|| meta.err(merges_key, "missing: a byte-level BPE vocabulary needs its merges"))?;
    let mut merges = Vec::with_capacity(raw_merges.len());
    for (i, m) in raw_merges.iter().enumerate() {
        let (a, b) = m
            .split_once(' ')
            .ok_or_else(|| meta.err(merges_key, format!("merge {i} `{m}` is not two tokens separated by a space")))?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| meta.err(merges_key, format!("cannot build BPE: {e}")))?;

    let pre_key = "tokenizer.ggml.pre";
    // Files written before llama.cpp recorded the chunking use its "default" (GPT-2's regex).
    let pre_name = meta.string(pre_key)?.unwrap_or("default");
    let chunking = pre_tokenizer::chunking(pre_name).ok_or_else(|| {
        meta.err(
            pre_key,
            format!(
                "pre-tokenizer `{pre_name}` is not supported; known: {}. Load the model's \
                 Hugging Face folder (tokenizer.json) instead",
                pre_tokenizer::known_names().join(", ")
            ),
        )
    })?;
    let pre = pre_tokenizer::pre_tokenizer(chunking, declared.add_prefix_space.unwrap_or(false))
        .map_err(|e| meta.err(pre_key, e))?;

    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let post = special_template(tokens, declared)
        .map_err(|e| meta.err("tokenizer.ggml.add_bos_token", e))?
        .unwrap_or_else(|| ByteLevelProcessor::new(true, false, true).into());
    tok.with_post_processor(Some(post));

    if let Some(types) = token_type {
        let pick = |want: i64| -> Vec<AddedToken> {
            spelled
                .iter()
                .zip(tokens)
                .zip(types)
                // A respelled token is a byte sequence, not a marker: registering it would
                // take it out of the merges.
                .filter(|((_, raw), &ty)| ty == want && is_byte_level(raw, &table))
                .map(|((t, _), _)| AddedToken::from(t.clone(), want == TOKEN_TYPE_CONTROL).normalized(false))
                .collect()
        };
        tok.add_special_tokens(pick(TOKEN_TYPE_CONTROL))
            .map_err(|e| meta.err("tokenizer.ggml.token_type", e.to_string()))?;
        tok.add_tokens(pick(TOKEN_TYPE_USER_DEFINED))
            .map_err(|e| meta.err("tokenizer.ggml.token_type", e.to_string()))?;
    }
    Ok(tok)
}

/// The post-processor that adds BOS/EOS when `tokenizer.ggml.add_{bos,eos}_token` ask for it,
/// or `None` when neither does.
pub(crate) fn special_template(tokens: &[&str], declared: &Declared) -> Result<Option<PostProcessorWrapper>, String> {
    let pick = |wanted: bool, id: Option<u32>, what: &str| -> Result<Option<(String, u32)>, String> {
        match (wanted, id) {
            (false, _) => Ok(None),
            (true, None) => Err(format!("the file asks to add {what} but declares no {what} id")),
            (true, Some(id)) => Ok(Some((tokens[id as usize].to_string(), id))),
        }
    };
    let bos = pick(declared.add_bos, declared.bos, "BOS")?;
    let eos = pick(declared.add_eos, declared.eos, "EOS")?;
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let seq = |piece: &str, type_id: u32| -> Vec<String> {
        let mut v = Vec::new();
        if let Some((t, _)) = &bos {
            v.push(format!("{t}:{type_id}"));
        }
        v.push(format!("{piece}:{type_id}"));
        if let Some((t, _)) = &eos {
            v.push(format!("{t}:{type_id}"));
        }
        v
    };
    let mut pair = seq("$A", 0);
    pair.extend(seq("$B", 1));
    let specials: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
    let fail = |e: String| format!("cannot build the BOS/EOS template: {e}");
    let mut builder = TemplateProcessing::builder();
    builder.try_single(seq("$A", 0)).map_err(fail)?;
    builder.try_pair(pair).map_err(fail)?;
    builder.special_tokens(specials);
    builder.build().map(|t| Some(t.into())).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    fn gpt2_meta(pre: Option<&str>) -> HashMap<String, Value> {
        let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        let mut map = HashMap::new();
        map.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
        map.insert("tokenizer.ggml.tokens".to_string(), strings(&["a", "b", "ab", "Ġ", "<|x|>", "<tool>"]));
        map.insert("tokenizer.ggml.merges".to_string(), strings(&["a b"]));
        map.insert(
            "tokenizer.ggml.token_type".to_string(),
            Value::Array([1, 1, 1, 1, 3, 4].iter().map(|&t| Value::I32(t)).collect()),
        );
        if let Some(pre) = pre {
            map.insert("tokenizer.ggml.pre".to_string(), Value::String(pre.into()));
        }
        map
    }

    fn build(map: &HashMap<String, Value>) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_parts(parts(Path::new("m.gguf"), map)?)
    }

    #[test]
    fn control_and_user_defined_tokens_are_added() {
        let tok = build(&gpt2_meta(Some("gpt2"))).unwrap();
        assert_eq!(tok.encode("ab<|x|>ab<tool>", false).unwrap(), [2, 4, 2, 5]);
        assert!(tok.is_special(4) && !tok.is_special(5));
        // Only control tokens are special: user-defined ones are still matched in plain text.
        assert_eq!(tok.encode_plain("<tool>").unwrap(), [5]);
        assert_ne!(tok.encode_plain("<|x|>").unwrap(), [4]);
        assert!(tok.chat_template().is_none());
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error_naming_the_key() {
        let err = build(&gpt2_meta(Some("no-such-pre"))).unwrap_err().to_string();
        assert!(err.contains("m.gguf") && err.contains("tokenizer.ggml.pre") && err.contains("no-such-pre"), "{err}");
        assert!(build(&gpt2_meta(None)).is_ok(), "a missing pre means llama.cpp's default");
    }

    #[test]
    fn bad_metadata_is_reported_by_key() {
        let mut map = gpt2_meta(Some("gpt2"));
        map.insert("tokenizer.ggml.model".into(), Value::String("rwkv".into()));
        assert!(build(&map).unwrap_err().to_string().contains("`rwkv` is not supported"));
        let mut map = gpt2_meta(Some("gpt2"));
        map.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(99));
        assert!(build(&map).unwrap_err().to_string().contains("tokenizer.ggml.eos_token_id"));
        let mut map = gpt2_meta(Some("gpt2"));
        map.insert("tokenizer.ggml.merges".into(), Value::Array(vec![Value::String("ab".into())]));
        assert!(build(&map).unwrap_err().to_string().contains("merge 0 `ab`"));
        let mut map = gpt2_meta(Some("gpt2"));
        map.remove("tokenizer.ggml.model");
        assert!(build(&map).unwrap_err().to_string().contains("has no tokenizer"));
        let mut map = gpt2_meta(Some("gpt2"));
        map.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
        assert!(build(&map).unwrap_err().to_string().contains("declares no BOS"));
        map.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(4));
        assert_eq!(build(&map).unwrap().encode("ab", true).unwrap(), [4, 2]);
    }
}
