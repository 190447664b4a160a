//! Turning a growing list of token ids into text piece by piece.
//!
//! A token can end in the middle of a UTF-8 character (byte-level BPE splits emoji and CJK into
//! several tokens), and some decoders change a token's text depending on what precedes it. So
//! each step decodes a short window of recent ids twice — without and with the new ones — and
//! hands out only the difference, once it no longer ends in an incomplete character (U+FFFD).

use crate::Result;

/// Anything that turns token ids back into text (special tokens left out).
pub trait Detokenizer {
    /// The text of `ids`; bytes that do not form complete UTF-8 become U+FFFD.
    fn detokenize(&self, ids: &[u32]) -> Result<String>;
}

impl<F: Fn(&[u32]) -> Result<String>> Detokenizer for F {
    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self(ids)
    }
}

/// Incremental detokenizer: feed ids one at a time, get back only new, complete text.
///
/// Concatenating every piece returned by [`push`](Self::push) and then [`finish`](Self::finish)
/// gives the text of all the ids.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the ids whose text has already been handed out.
    read_offset: usize,
}

impl IncrementalDecoder {
    /// A decoder with no ids yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id` and returns the text it completes (possibly empty).
    pub fn push(&mut self, detok: &dyn Detokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = detok.detokenize(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = detok.detokenize(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(new) = full.get(prefix.len()..) {
                let new = new.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return Ok(new);
            }
        }
        Ok(String::new())
    }

    /// Returns whatever text is still held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self, detok: &dyn Detokenizer) -> Result<String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let prefix = detok.detokenize(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = detok.detokenize(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: id `n` is the byte `n`.
    fn bytes(ids: &[u32]) -> Result<String> {
        let b: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn multibyte_character_is_emitted_once_complete() {
        let mut d = IncrementalDecoder::new();
        let text = "a😀b";
        let mut pieces = Vec::new();
        for &b in text.as_bytes() {
            pieces.push(d.push(&bytes, u32::from(b)).unwrap());
        }
        // `a`, then three empty pieces while the emoji is incomplete, then the emoji, then `b`.
        assert_eq!(pieces, vec!["a", "", "", "", "😀", "b"]);
        assert_eq!(d.finish(&bytes).unwrap(), "");
    }

    #[test]
    fn finish_flushes_an_incomplete_tail() {
        let mut d = IncrementalDecoder::new();
        let mut out = d.push(&bytes, u32::from(b'x')).unwrap();
        out += &d.push(&bytes, 0xF0).unwrap();
        assert_eq!(out, "x");
        assert_eq!(d.finish(&bytes).unwrap(), "\u{FFFD}");
    }
}
