//! The library's error type: every failure names the thing that failed and, where possible,
//! what the user can do about it.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = GraftError> = std::result::Result<T, E>;

/// Everything that can go wrong in graft, grouped by the layer that detected it.
#[derive(Debug, thiserror::Error)]
pub enum GraftError {
    /// A GGUF file is malformed or unsupported.
    #[error(transparent)]
    Gguf(#[from] crate::io::gguf::GgufError),
    /// A safetensors file is malformed or unsupported.
    #[error(transparent)]
    Safetensors(#[from] crate::io::safetensors::SafetensorsError),
    /// Fetching or locating a named asset failed.
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// Building or running a tokenizer or chat template failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// Fine-tuning data is malformed or empty.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A model file or folder does not describe a model graft can build.
    #[error("model {path}: {reason}")]
    Model {
        /// The file or folder that was being loaded.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Bad user input that is not tied to a file (a flag, a prompt, a setting).
    #[error("{0}")]
    Input(String),
    /// A tensor computation failed (shape mismatch, device error, ...).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON document could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A chart of a comparison report could not be drawn.
    #[error("report chart `{chart}`: {reason}")]
    Plot {
        /// Which chart (`loss curves`, `metric bars`, `learning curve`).
        chart: &'static str,
        /// What the drawing library reported.
        reason: String,
    },
}

impl GraftError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GraftError::Io { path: path.into(), source }
    }

    /// Builds a model-loading error for `path`.
    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        GraftError::Model { path: path.into(), reason: reason.into() }
    }
}
