//! What can go wrong while reading fine-tuning data, always named by file and line.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a data file could not be turned into examples or batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The data file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// One line is malformed (strict mode), or cannot be rendered into a sample.
    #[error("{}: {problem}", Location { path, line: *line, column: *column })]
    Line {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based byte column, where the problem has one (bad UTF-8, JSON syntax).
        column: Option<usize>,
        /// What is wrong with the line.
        problem: LineProblem,
    },
    /// A line is longer than the cap; lines are read one at a time and never held beyond it.
    #[error(
        "{}:{line}: line is longer than {cap} bytes; split the sample or raise `max_line_bytes`",
        path.display()
    )]
    LineTooLong {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cap in bytes.
        cap: usize,
    },
    /// No sample is left; `after` names the step that removed the last one.
    #[error("{}: no usable samples {after}", path.display())]
    EmptyDataset {
        /// The data file.
        path: PathBuf,
        /// Which step removed everything, e.g. `in the file (it has no JSON lines)`.
        after: String,
    },
    /// The format renders conversations, and the model has no chat template.
    #[error(
        "data format `{format}` renders conversations with the model's chat template, and this model \
         has none: use format `text` or `prompt_completion`"
    )]
    NoChatTemplate {
        /// The requested format.
        format: super::DataFormat,
    },
    /// The tokenizer has no EOS token, which every sample ends with.
    #[error(
        "the tokenizer has no EOS token: graft ends every sample with EOS so that a fine-tuned model learns to stop"
    )]
    NoEos,
    /// An argument is out of range (batch size 0, sequence length below 2, ...).
    #[error("{0}")]
    Argument(String),
    /// An example handed to `make_batches` without packing is longer than `seq_len`.
    #[error("example {index} has {len} tokens, more than seq_len = {seq_len}: load it with the same seq_len")]
    ExampleTooLong {
        /// Position of the example in the slice.
        index: usize,
        /// Its number of tokens.
        len: usize,
        /// The row length asked for.
        seq_len: usize,
    },
    /// Building a batch tensor failed.
    #[error("building a batch: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What is wrong with one line of a JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The bytes are not UTF-8 (the error's column is the first bad byte).
    #[error("invalid UTF-8; save the file as UTF-8")]
    BadUtf8,
    /// The line is not one JSON value (the error's column says where parsing stopped).
    #[error("not valid JSON: {reason}")]
    NotJson {
        /// The parser's message.
        reason: String,
    },
    /// The line is valid JSON but not an object.
    #[error("expected a JSON object, found {found}")]
    NotObject {
        /// What was found (`an array`, `a string`, ...).
        found: &'static str,
    },
    /// A required field is absent.
    #[error("missing field `{field}`{hint}")]
    MissingField {
        /// Path of the field, e.g. `messages[2].content`.
        field: String,
        /// A hint naming the format the line looks like, or empty.
        hint: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// Path of the field.
        field: String,
        /// The type it must have.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// A message has a role chat templates are not rendered with.
    #[error("field `{field}`: unknown role `{role}`; use system, user or assistant")]
    UnknownRole {
        /// Path of the field, e.g. `messages[1].role`.
        field: String,
        /// The role found.
        role: String,
    },
    /// The conversation cannot be trained on as given (no assistant turn, system not first, ...).
    #[error("{0}")]
    Conversation(String),
    /// An empty line that is followed by more data (only trailing empty lines are allowed).
    #[error("empty line in the middle of the file; remove it (only trailing empty lines are allowed)")]
    EmptyLine,
    /// The model's chat template failed on this conversation.
    #[error("{0}")]
    Template(String),
    /// The tokenizer failed on this line.
    #[error("{0}")]
    Tokenizer(String),
    /// The sample has no token to learn from (e.g. an empty `text`).
    #[error("the sample has no loss target: {0}")]
    NoTargets(String),
}

/// `file:line` or `file:line:column`.
struct Location<'a> {
    path: &'a Path,
    line: usize,
    column: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        Ok(())
    }
}

impl DataError {
    /// The 1-based line an error is about, where it is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::Line { line, .. } | DataError::LineTooLong { line, .. } => Some(*line),
            _ => None,
        }
    }
}
