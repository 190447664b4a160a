//! Stop strings: finding the first one in generated text, and knowing how much of the text's end
//! must be held back while streaming because it might be the start of one.

use crate::{GraftError, Result};

/// A set of strings that end generation when they appear in the output (they are not part of
/// the returned text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStrings {
    stops: Vec<String>,
}

impl StopStrings {
    /// Builds the set; empty strings are refused (they would match before any output).
    pub fn new(stops: Vec<String>) -> Result<Self> {
        if stops.iter().any(String::is_empty) {
            return Err(GraftError::Input("a stop string cannot be empty".into()));
        }
        Ok(Self { stops })
    }

    /// Whether there are no stop strings.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Length in bytes of the longest stop string.
    pub fn max_len(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }

    /// Byte offset of the earliest complete stop string in `text` that starts at or after
    /// `from` (rounded down to a character boundary), if any.
    pub fn find(&self, text: &str, from: usize) -> Option<usize> {
        let mut from = from.min(text.len());
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let hay = &text[from..];
        self.stops.iter().filter_map(|s| hay.find(s.as_str())).min().map(|i| from + i)
    }

    /// Bytes at the end of `text` that could begin a stop string (the longest suffix of `text`
    /// that is a proper prefix of one): streaming must hold them back until the next token
    /// shows whether the stop string completes.
    pub fn partial_suffix_len(&self, text: &str) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for len in (best + 1..s.len()).rev() {
                if s.is_char_boundary(len) && text.ends_with(&s[..len]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> StopStrings {
        StopStrings::new(s.iter().map(|x| x.to_string()).collect()).unwrap()
    }

    #[test]
    fn finds_the_earliest_of_several() {
        let s = stops(&["END", "\n\n"]);
        assert_eq!(s.find("abc\n\nxyz END", 0), Some(3));
        assert_eq!(s.find("abc\n\nxyz END", 4), Some(9));
        assert_eq!(s.find("nothing here", 0), None);
    }

    #[test]
    fn search_start_is_moved_to_a_char_boundary() {
        let s = stops(&["é!"]);
        // Byte 1 is inside `é`; the search starts at 0 and still finds it.
        assert_eq!(s.find("é!", 1), Some(0));
    }

    #[test]
    fn holds_back_a_possible_beginning() {
        let s = stops(&["User:", "###"]);
        assert_eq!(s.partial_suffix_len("hello Us"), 2);
        assert_eq!(s.partial_suffix_len("hello ##"), 2);
        assert_eq!(s.partial_suffix_len("hello"), 0);
        // A complete stop string is found by `find`, not held back.
        assert_eq!(s.partial_suffix_len("User:"), 0);
    }

    #[test]
    fn refuses_empty_stop_string() {
        assert!(StopStrings::new(vec![String::new()]).is_err());
    }
}
