//! Tokenizers (from GGUF metadata or `tokenizer.json`) and chat templates.

/// Why a tokenizer or chat template could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer description is incomplete or inconsistent.
    #[error("tokenizer: {0}")]
    Invalid(String),
}
