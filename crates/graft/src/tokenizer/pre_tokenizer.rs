//! Byte-level BPE pre-tokenization named by llama.cpp's `tokenizer.ggml.pre`.
//!
//! BPE merges only within a chunk, so the regex that cuts text into chunks decides the result.
//! llama.cpp names the chunking a vocabulary was trained with (`smollm`, `llama-bpe`, `qwen2`, ...);
//! several names share one chunking. Each supported name maps to the `tokenizers` pipeline that
//! reproduces it; an unknown name is an error rather than a silent GPT-2 fallback.
//!
//! The reference is transformers' GGUF loader, which graft's golden files come from. It chunks
//! the StarCoder family (`smollm`, `starcoder`, ...) with GPT-2's regex alone, where llama.cpp and
//! the models' own `tokenizer.json` split every digit off first; the two differ only where
//! whitespace runs meet digits (`"\n   1."`), and graft follows transformers.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// Llama-3's chunking: letters with one leading non-letter, numbers in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's chunking: as Llama-3's, with every digit on its own.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The chunkings graft knows, each a family of llama.cpp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunking {
    /// GPT-2's regex (what `ByteLevel` applies by itself).
    Gpt2,
    /// Llama-3's regex.
    Llama3,
    /// Qwen2's regex.
    Qwen2,
}

/// The llama.cpp `tokenizer.ggml.pre` names of each chunking (llama.cpp's `llama-vocab.cpp`).
const FAMILIES: &[(Chunking, &[&str])] = &[
    (Chunking::Gpt2, &["default", "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe"]),
    // llama.cpp splits digits off first for these; transformers does not (see the module docs).
    (Chunking::Gpt2, &["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"]),
    (Chunking::Llama3, &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"]),
    (Chunking::Qwen2, &["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"]),
];

/// The chunking llama.cpp uses for `name`, or `None` when graft does not know it.
pub(crate) fn chunking(name: &str) -> Option<Chunking> {
    FAMILIES.iter().find(|(_, names)| names.contains(&name)).map(|(c, _)| *c)
}

/// All names graft accepts, for error messages.
pub(crate) fn known_names() -> Vec<&'static str> {
    FAMILIES.iter().flat_map(|(_, names)| names.iter().copied()).collect()
}

/// The `tokenizers` pre-tokenizer for a chunking; `add_prefix_space` is GGUF's
/// `tokenizer.ggml.add_space_prefix` (false for nearly every byte-level vocabulary).
pub(crate) fn pre_tokenizer(chunking: Chunking, add_prefix_space: bool) -> Result<PreTokenizerWrapper, String> {
    let byte_level =
        |use_regex: bool| -> PreTokenizerWrapper { ByteLevel::new(add_prefix_space, true, use_regex).into() };
    let split = |regex: &str| -> Result<PreTokenizerWrapper, String> {
        Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map(Into::into)
            .map_err(|e| format!("bad split regex: {e}"))
    };
    Ok(match chunking {
        Chunking::Gpt2 => byte_level(true),
        Chunking::Llama3 => Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]).into(),
        Chunking::Qwen2 => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]).into(),
    })
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other
/// 68 bytes take the characters from U+0100 on, in byte order.
pub(crate) fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// Whether every character of `token` is one of the 256 byte-level characters.
pub(crate) fn is_byte_level(token: &str, table: &[char; 256]) -> bool {
    token.chars().all(|c| table.contains(&c))
}

/// `token` in byte-level spelling: llama.cpp writes a vocabulary entry whose bytes are not valid
/// UTF-8 as raw text (e.g. U+FFFD), while the merges spell it byte by byte.
pub(crate) fn respell(token: &str, table: &[char; 256]) -> String {
    if is_byte_level(token, table) {
        token.to_string()
    } else {
        token.bytes().map(|b| table[b as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn chunks(c: Chunking, text: &str) -> Vec<String> {
        let pre = pre_tokenizer(c, false).unwrap();
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(s, _, _)| s.to_string()).collect()
    }

    #[test]
    fn byte_table_matches_gpt2() {
        let t = byte_chars();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń');
        let alphabet = ByteLevel::alphabet();
        assert_eq!(alphabet.len(), 256);
        assert!(t.iter().all(|c| alphabet.contains(c)));
    }

    #[test]
    fn respells_raw_tokens_only() {
        let t = byte_chars();
        assert_eq!(respell("Ġworld", &t), "Ġworld");
        assert_eq!(respell("\u{FFFD}", &t), "ï¿½");
    }

    #[test]
    fn chunkings_follow_their_regexes() {
        let text = "x  12345\n  y";
        assert_eq!(chunks(Chunking::Gpt2, text), ["x", "Ġ", "Ġ12345", "ĊĠ", "Ġy"]);
        // `\s+(?!\S)` leaves the space before a digit on its own; digits go in threes.
        assert_eq!(chunks(Chunking::Llama3, text), ["x", "Ġ", "Ġ", "123", "45", "Ċ", "Ġ", "Ġy"]);
        assert_eq!(chunks(Chunking::Qwen2, "a 12"), ["a", "Ġ", "1", "2"]);
        assert_eq!(chunking("smollm"), Some(Chunking::Gpt2));
        assert_eq!(chunking("qwen2"), Some(Chunking::Qwen2));
        assert_eq!(chunking("no-such-pre"), None);
    }
}
