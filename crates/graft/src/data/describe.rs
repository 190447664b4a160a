//! A readable view of one example, for `graft preprocess --show N`.

use super::Example;
use crate::tokenizer::Tokenizer;

/// Opens a run of supervised tokens in [`describe_example`].
pub const MARK_OPEN: &str = "⟦";
/// Closes a run of supervised tokens in [`describe_example`].
pub const MARK_CLOSE: &str = "⟧";

/// The example's text with every run of supervised tokens (loss targets) wrapped in `⟦…⟧`,
/// special tokens spelled out, after a one-line summary. A chat sample of the default model ends
/// `⟦Hello!<|im_end|>⟧`: the EOS is learned.
pub fn describe_example(ex: &Example, tok: &Tokenizer) -> String {
    let n_sup = ex.supervised.iter().filter(|&&s| s).count();
    let mut out = format!("{} tokens, {} supervised (marked {MARK_OPEN}…{MARK_CLOSE})\n", ex.ids.len(), n_sup);
    let flag = |i: usize| ex.supervised.get(i).copied().unwrap_or(false);
    let mut start = 0;
    while start < ex.ids.len() {
        let end = (start..ex.ids.len()).find(|&i| flag(i) != flag(start)).unwrap_or(ex.ids.len());
        let run = &ex.ids[start..end];
        let text = tok.decode(run, false).unwrap_or_else(|_| format!("{run:?}"));
        if flag(start) {
            out.push_str(MARK_OPEN);
            out.push_str(&text);
            out.push_str(MARK_CLOSE);
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    out
}
