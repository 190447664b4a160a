//! Fine-tuning data: JSONL records in four formats → token ids with a per-token supervision
//! flag → padded or packed batches with a loss mask.
//!
//! Masks are built from positions, never from token ids: SmolLM2's pad token is its EOS token,
//! and masking by id would teach a model never to stop.

mod batch;
mod chat;
mod jsonl;
mod records;

pub use batch::{make_batches, Batch};
pub use chat::prompt_ids;
pub use records::load_examples;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the records of a JSONL file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `{"text": ...}`: every token is supervised.
    Text,
    /// `{"prompt": ..., "completion": ...}`: plain concatenation, loss on the completion.
    PromptCompletion,
    /// `{"messages": [{"role", "content"}, ...]}` rendered with the model's chat template, loss on
    /// assistant turns.
    Messages,
    /// `{"instruction", "input"?, "output"}` rendered as a user/assistant chat, loss on the output.
    Alpaca,
}

/// One tokenized sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `supervised[i]`: token `i` is a loss target (predicted from the tokens before it).
    pub supervised: Vec<bool>,
}

/// Statistics of a loaded file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Samples kept.
    pub n_examples: usize,
    /// Samples cut to `seq_len`.
    pub n_truncated: usize,
    /// Supervised tokens over all samples.
    pub n_supervised_tokens: usize,
    /// Tokens over all samples.
    pub n_tokens: usize,
}

/// Why data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The data file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// One line is malformed.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line is longer than the cap (streaming reads never hold more than this).
    #[error("{path}:{line}: line is longer than {cap} bytes")]
    LineTooLong {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cap in bytes.
        cap: usize,
    },
    /// Nothing usable is left.
    #[error("{path}: no usable samples {after}")]
    Empty {
        /// The data file.
        path: PathBuf,
        /// Which step removed everything (`in the file`, `after truncation`, ...).
        after: String,
    },
    /// Tokenizing or rendering failed.
    #[error("{path}:{line}: {reason}")]
    Render {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What failed.
        reason: String,
    },
}

/// Splits off a deterministic `eval_fraction` of `examples` (at least one sample on each side
/// when there are two or more).
pub fn split_train_eval(mut examples: Vec<Example>, eval_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    shuffle(&mut examples, seed ^ 0x5eed_e7a1, 0);
    let n = examples.len();
    let mut n_eval = ((n as f64) * eval_fraction).round() as usize;
    if n >= 2 {
        n_eval = n_eval.clamp(1, n - 1);
    }
    let eval = examples.split_off(n - n_eval.min(n));
    (examples, eval)
}

/// Shuffles `examples` deterministically by `(seed, epoch)`.
pub fn shuffle(examples: &mut [Example], seed: u64, epoch: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch);
    examples.shuffle(&mut rng);
}

/// The tokens of `ex`, supervised ones wrapped in `[[…]]` (for `graft preprocess --show`).
pub fn describe_example(ex: &Example, tok: &crate::tokenizer::Tokenizer) -> String {
    let mut out = String::new();
    for (&id, &sup) in ex.ids.iter().zip(&ex.supervised) {
        let piece = tok.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"));
        if sup {
            out.push_str("[[");
            out.push_str(&piece);
            out.push_str("]]");
        } else {
            out.push_str(&piece);
        }
    }
    out
}
