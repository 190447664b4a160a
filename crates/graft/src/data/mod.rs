//! Fine-tuning data: JSONL lines in four formats → token ids with a per-token supervision flag
//! → padded or packed batches with a loss mask.
//!
//! ```text
//! file.jsonl ──load_examples──▶ Vec<Example> ──split_train_eval / shuffle──▶ make_batches ──▶ Vec<Batch>
//! ```
//!
//! - [`load_examples`] reads the file line by line (`jsonl.rs`), parses each line in its
//!   [`DataFormat`] (`record.rs`), tokenizes it with content protected from special-token
//!   injection (`render.rs`), and truncates it to `seq_len` (`load.rs`).
//! - [`make_batches`] builds the model's inputs, next-token targets and a loss mask from
//!   positions, never from token ids (`batch.rs`): the default model's pad token is its EOS.
//!
//! The user-facing description (formats, what is learned, packing, truncation, errors) is
//! docs/data.md.

mod answer;
mod batch;
mod describe;
mod error;
mod jsonl;
mod length_groups;
mod load;
mod mix;
mod paired;
mod record;
mod render;
pub mod source;
pub(crate) mod split;
mod texts;

pub use answer::{read_answer_records, AnswerRecord};
pub use batch::{make_batches, Batch};
pub use describe::{describe_example, MARK_CLOSE, MARK_OPEN};
pub use error::{DataError, LineProblem};
pub use jsonl::DEFAULT_MAX_LINE_BYTES;
pub use length_groups::{in_length_groups, length_groups, PADDING_SLACK};
pub use load::{load_examples, load_examples_with, LoadOptions, LoadReport};
pub use mix::{mix_in, replay_count};
pub use paired::load_paired_examples;
pub(crate) use record::kind as json_kind;
pub use render::{plain_prompt_ids, prompt_ids};
pub(crate) use split::{below, permute, rng as stream_rng, uniform};
pub use split::{shuffle, split_train_eval};
pub use texts::{read_labelled, read_objects, read_string_fields, read_texts, Labelled, NumberedObject};

use serde::{Deserialize, Serialize};

/// How the lines of a JSONL data file are laid out, and what of them is learned.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `{"text": ...}`: every token is learned, then EOS.
    Text,
    /// `{"prompt": ..., "completion": ...}`: plain concatenation `prompt + completion + EOS`
    /// (no chat template); the completion and EOS are learned.
    PromptCompletion,
    /// `{"messages": [{"role", "content"}, ...]}` rendered with the model's chat template; each
    /// assistant content and the end-of-turn token closing it are learned.
    Messages,
    /// `{"instruction", "input" (optional), "output"}` rendered as a user turn
    /// (`instruction`, plus `"\n\n" + input` when non-empty) and an assistant turn (`output`),
    /// as in [`DataFormat::Messages`].
    Alpaca,
}

impl DataFormat {
    /// Every format, in documentation order.
    pub const ALL: [DataFormat; 4] =
        [DataFormat::Text, DataFormat::PromptCompletion, DataFormat::Messages, DataFormat::Alpaca];

    /// The name used in configs (`"prompt_completion"`).
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Text => "text",
            DataFormat::PromptCompletion => "prompt_completion",
            DataFormat::Messages => "messages",
            DataFormat::Alpaca => "alpaca",
        }
    }

    /// A one-line example of the format.
    pub fn example_line(self) -> &'static str {
        match self {
            DataFormat::Text => r#"{"text": "..."}"#,
            DataFormat::PromptCompletion => r#"{"prompt": "...", "completion": "..."}"#,
            DataFormat::Messages => {
                r#"{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}"#
            }
            DataFormat::Alpaca => r#"{"instruction": "...", "input": "...", "output": "..."}"#,
        }
    }

    /// Whether lines are rendered with the model's chat template.
    pub fn needs_chat_template(self) -> bool {
        matches!(self, DataFormat::Messages | DataFormat::Alpaca)
    }
}

impl std::str::FromStr for DataFormat {
    type Err = String;

    /// Reads a format by its config name (`messages`, `prompt_completion`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            format!("unknown data format `{s}`; one of {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for DataFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tokenized sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `supervised[i]`: token `i` is a loss target (predicted from the tokens before it). The
    /// first token is never supervised; the last is a supervised EOS.
    pub supervised: Vec<bool>,
}
