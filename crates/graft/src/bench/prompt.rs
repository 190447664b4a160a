//! The text whose tokens the benchmarks feed the model: real English (token statistics and
//! attention patterns of random ids are not those of text), fixed so runs are comparable.

use crate::{GraftError, Result};

/// Built-in English text, repeated as needed when no corpus file is given.
pub const DEFAULT_TEXT: &str = "The history of science is the study of how people came to understand the \
natural world. Early astronomers tracked the motion of the planets, physicians described the body, \
and engineers built bridges and clocks long before anyone could explain why they worked. ";

/// The first `n` ids of `ids` repeated end to end until there are `n` (errors on no ids).
pub fn take_cycled(ids: &[u32], n: usize) -> Result<Vec<u32>> {
    if ids.is_empty() {
        return Err(GraftError::Input("the benchmark text produced no tokens".into()));
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

/// `batch` consecutive rows of `seq` ids taken from the start of `ids` (cycled if too short).
pub fn rows(ids: &[u32], seq: usize, batch: usize) -> Result<Vec<Vec<u32>>> {
    let flat = take_cycled(ids, seq * batch)?;
    Ok(flat.chunks(seq.max(1)).map(<[u32]>::to_vec).collect())
}

/// Stand-in ids when no tokenizer is available (a randomly initialised model without its
/// file): the text's bytes, each byte one id. Still the statistics of text, not random ids.
pub fn byte_ids(text: &str, vocab_size: usize) -> Vec<u32> {
    text.bytes().map(|b| u32::from(b) % vocab_size.max(1) as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_consecutive_and_cycle() {
        let r = rows(&[1, 2, 3], 2, 2).unwrap();
        assert_eq!(r, vec![vec![1, 2], vec![3, 1]]);
        assert!(rows(&[], 2, 2).is_err());
    }
}
