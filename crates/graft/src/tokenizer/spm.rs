//! SentencePiece-style GGUF vocabularies (`tokenizer.ggml.model = "llama"`): Llama-2, Mistral
//! v0.1-v0.3, Gemma, ...
//!
//! Such a file holds pieces and scores but usually no merges. As in transformers, the tokenizer
//! is a BPE with byte fallback whose merges are derived from the vocabulary: every way of
//! splitting a piece into two pieces of the vocabulary is a merge, ranked by the merged piece's
//! score (Llama) or by its position in the vocabulary (Gemma, whose scores are not ranks).
//! Gemma is recognised by whitespace-run pieces written with spaces where SentencePiece writes
//! `▁`; it normalises spaces to `▁` instead of using a Metaspace pre-tokenizer.

use super::from_gguf::{special_template, Declared, Meta, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};
use super::TokenizerError;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, Tokenizer};

/// SentencePiece's word-boundary marker.
const SPACE: char = '▁';

/// Whether the vocabulary is Gemma's: some piece is a run of whitespace written with spaces.
fn is_gemma(tokens: &[&str]) -> bool {
    tokens.iter().any(|t| t.contains(' ') && t.trim().is_empty())
}

/// A piece as the vocabulary holds it: Gemma's whitespace runs written with `▁`.
fn spelled(token: &str) -> String {
    if token.contains(' ') && token.trim().is_empty() {
        std::iter::repeat_n(SPACE, token.chars().count()).collect()
    } else {
        token.to_string()
    }
}

/// Merges derived from the vocabulary (see the module docs). `rank_by_position` ranks a merge
/// by where its result sits in the vocabulary instead of by its score.
fn derive_merges(pieces: &[String], scores: &[f32], rank_by_position: bool) -> Vec<(String, String)> {
    // As in a Python dict built from the list: first position orders, last occurrence gives the value.
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(pieces.len());
    let mut order: Vec<&str> = Vec::with_capacity(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        if last.insert(p.as_str(), i).is_none() {
            order.push(p);
        }
    }
    let score = |p: &str| last.get(p).map(|&i| scores[i]).unwrap_or(f32::NEG_INFINITY);
    let rank = |p: &str| -> f64 {
        let i = last.get(p).copied().unwrap_or(0);
        if rank_by_position {
            -(i as f64)
        } else {
            scores[i] as f64
        }
    };
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for piece in order {
        let mut local: Vec<(&str, &str, f64)> = piece
            .char_indices()
            .skip(1)
            .map(|(at, _)| piece.split_at(at))
            .filter(|(l, r)| last.contains_key(l) && last.contains_key(r))
            .map(|(l, r)| (l, r, rank(piece)))
            .collect();
        local.sort_by(|a, b| {
            (score(b.0), score(b.1)).partial_cmp(&(score(a.0), score(a.1))).unwrap_or(std::cmp::Ordering::Equal)
        });
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

/// Builds the tokenizer of a SentencePiece-style GGUF vocabulary.
pub(crate) fn tokenizer(
    meta: &Meta<'_>,
    tokens: &[&str],
    token_type: Option<&[i64]>,
    declared: &Declared,
) -> Result<Tokenizer, TokenizerError> {
    let gemma = is_gemma(tokens);
    let pieces: Vec<String> = tokens.iter().map(|t| spelled(t)).collect();
    let merges = match meta.strings("tokenizer.ggml.merges")? {
        Some(raw) => raw
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| meta.err("tokenizer.ggml.merges", format!("merge {i} `{m}` is not two tokens")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let key = "tokenizer.ggml.scores";
            let scores = meta
                .floats(key)?
                .ok_or_else(|| meta.err(key, "missing: a SentencePiece vocabulary without merges needs scores"))?;
            if scores.len() != pieces.len() {
                return Err(meta.err(key, format!("{} scores for {} tokens", scores.len(), pieces.len())));
            }
            derive_merges(&pieces, &scores, gemma)
        }
    };
    let vocab: Vocab = pieces.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).fuse_unk(true).byte_fallback(true);
    if let Some(unk) = declared.unk {
        builder = builder.unk_token(pieces[unk as usize].clone());
    }
    let bpe = builder.build().map_err(|e| meta.err("tokenizer.ggml.tokens", format!("cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);

    let add_prefix_space = declared.add_prefix_space.unwrap_or(true);
    let replace =
        |from: &str, to: &str| Replace::new(from, to).map_err(|e| meta.err("tokenizer.ggml.tokens", e.to_string()));
    let mut decoders: Vec<DecoderWrapper> = Vec::new();
    if gemma {
        tok.with_normalizer(Some(replace(" ", "▁")?)).map_err(|e| meta.err("tokenizer.ggml.tokens", e.to_string()))?;
        decoders.extend([replace("▁", " ")?.into(), ByteFallback::new().into(), Fuse::new().into()]);
    } else {
        let scheme = if add_prefix_space { PrependScheme::First } else { PrependScheme::Never };
        tok.with_pre_tokenizer(Some(Metaspace::new(SPACE, scheme, false)));
        decoders.extend([ByteFallback::new().into(), Fuse::new().into(), replace("▁", " ")?.into()]);
    }
    if add_prefix_space {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    if let Some(post) = special_template(tokens, declared).map_err(|e| meta.err("tokenizer.ggml.add_bos_token", e))? {
        tok.with_post_processor(Some(post));
    }

    let specials: Vec<AddedToken> = match token_type {
        Some(types) => pieces
            .iter()
            .zip(types)
            .filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL)
            .map(|(p, _)| AddedToken::from(p.clone(), true).normalized(false))
            .collect(),
        None => [declared.unk, declared.bos, declared.eos]
            .into_iter()
            .flatten()
            .map(|id| AddedToken::from(pieces[id as usize].clone(), true).normalized(false))
            .collect(),
    };
    tok.add_special_tokens(specials).map_err(|e| meta.err("tokenizer.ggml.token_type", e.to_string()))?;
    if let Some(types) = token_type {
        // Whitespace runs are reached through the merges; registering them would bypass the
        // normalizer that turns spaces into `▁`.
        let user: Vec<AddedToken> = pieces
            .iter()
            .zip(types)
            .filter(|(p, &ty)| ty == TOKEN_TYPE_USER_DEFINED && !p.chars().all(|c| c == SPACE || c.is_whitespace()))
            .map(|(p, _)| AddedToken::from(p.clone(), false).normalized(false))
            .collect();
        tok.add_tokens(user).map_err(|e| meta.err("tokenizer.ggml.token_type", e.to_string()))?;
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_scores() {
        let pieces: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].iter().map(|s| s.to_string()).collect();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let merges = derive_merges(&pieces, &scores, false);
        let m: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
        assert_eq!(m, ["a b", "b c", "a bc", "ab c"]);
        // Ranked by position instead, the order is the same here but `abc`'s splits come last.
        let by_pos = derive_merges(&pieces, &scores, true);
        assert_eq!(by_pos.len(), 4);
        assert_eq!(by_pos[0], ("a".to_string(), "b".to_string()));
    }

    #[test]
    fn gemma_is_recognised_by_space_runs() {
        assert!(is_gemma(&["a", "  ", "b"]));
        assert!(!is_gemma(&["a", "▁▁", "b c"]));
        assert_eq!(spelled("   "), "▁▁▁");
        assert_eq!(spelled("a b"), "a b");
    }

    use crate::tokenizer::Tokenizer;
    use candle_core::quantized::gguf_file::Value;

    fn vocab(tokens: &[&str], scores: &[f32], types: &[i32], extra: &[(&str, Value)]) -> Tokenizer {
        let mut map: HashMap<String, Value> = HashMap::new();
        let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        map.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        map.insert("tokenizer.ggml.tokens".into(), strings(tokens));
        map.insert("tokenizer.ggml.scores".into(), Value::Array(scores.iter().map(|&x| Value::F32(x)).collect()));
        map.insert("tokenizer.ggml.token_type".into(), Value::Array(types.iter().map(|&x| Value::I32(x)).collect()));
        for (k, v) in extra {
            map.insert(k.to_string(), v.clone());
        }
        let parts = crate::tokenizer::from_gguf::parts(std::path::Path::new("test.gguf"), &map).unwrap();
        Tokenizer::from_parts(parts).unwrap()
    }

    #[test]
    fn llama_vocabulary_encodes_with_derived_merges_and_byte_fallback() {
        let tokens = [
            "<unk>", "<s>", "</s>", "▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "llo", "▁hello",
            "<0x21>",
        ];
        let scores = [0.0, 0.0, 0.0, -0.5, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0, -1.0, -2.0, -3.0, -4.0, -5.0, 0.0];
        let types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 6];
        let ids_of = [
            ("tokenizer.ggml.bos_token_id", 1u32),
            ("tokenizer.ggml.eos_token_id", 2),
            ("tokenizer.ggml.unknown_token_id", 0),
        ];
        let extra: Vec<(&str, Value)> = ids_of.iter().map(|(k, v)| (*k, Value::U32(*v))).collect();
        let tok = vocab(&tokens, &scores, &types, &extra);
        let (ids, pieces) = tok.encode_with_tokens("hello world!", false).unwrap();
        assert_eq!(pieces, ["▁hello", "▁", "w", "o", "r", "l", "d", "<0x21>"]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "hello world!");
        // llama.cpp's default for SentencePiece vocabularies: BOS is added.
        assert!(tok.adds_bos());
        assert_eq!(tok.encode("hello", true).unwrap(), [1, 15]);
        assert_eq!(tok.encode("<s>hello", false).unwrap()[0], 1);
        assert!(tok.encode_plain("<s>").unwrap().iter().all(|&id| !tok.is_special(id)));
    }

    #[test]
    fn gemma_vocabulary_keeps_space_runs() {
        let tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "  ", "▁", "a", "b"];
        let scores = [0.0, 0.0, 0.0, 0.0, -1000.0, 0.0, 0.0, 0.0];
        let types = [3, 3, 3, 2, 1, 1, 1, 1];
        let extra = [
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ];
        let tok = vocab(&tokens, &scores, &types, &extra);
        assert_eq!(tok.encode("a  b", false).unwrap(), [6, 4, 7]);
        assert_eq!(tok.decode(&[6, 4, 7], false).unwrap(), "a  b");
    }
}
