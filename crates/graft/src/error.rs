//! The library's error type: every failure names the thing that failed and, where possible,
//! what the user can do about it. Each error has a [`ErrorKind`], and each kind its own process
//! exit code, so scripts can tell bad input from a diverged run from a run directory in use.

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
    /// A PyTorch checkpoint is malformed, unsupported or refused.
    #[error(transparent)]
    Torch(#[from] crate::io::torch::TorchError),
    /// A CTranslate2 model file or folder is malformed or unsupported.
    #[error(transparent)]
    Ctranslate2(#[from] crate::io::ctranslate2::Ct2Error),
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
    /// An audio file cannot be read as speech input: not a WAV file, truncated, an unsupported
    /// sample format, no channels, a sample rate out of range, or no audio at all.
    #[error("audio {}: {reason}", path.display())]
    Audio {
        /// The audio file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Bad user input that is not tied to a file (a flag, a prompt, a setting).
    #[error("{0}")]
    Input(String),
    /// Training diverged: a loss or gradient norm became NaN or infinite, so the update was not
    /// applied (the weights and the last checkpoint are those of the step before).
    #[error("{unit} {step}: {what}; stopping — {hint}")]
    Diverged {
        /// What `step` counts: `step` (optimizer steps) or `epoch`.
        unit: &'static str,
        /// The step (or epoch) that diverged, 1-based.
        step: u64,
        /// Which value stopped being finite, with its value (`loss is NaN (micro-batch 0)`).
        what: String,
        /// What to change before trying again.
        hint: &'static str,
    },
    /// Another graft process holds the run directory's lock (`<dir>/.lock`).
    #[error("run directory {} is in use by another graft run; wait for it to end or choose another output.dir", path.display())]
    RunDirLocked {
        /// The run directory.
        path: PathBuf,
    },
    /// An export read back differs from what was written (a tensor that is not the rounded
    /// weight, logits beyond the format's bound, another most likely token).
    #[error("export check failed: {}: {reason}", path.display())]
    ExportMismatch {
        /// What was written.
        path: PathBuf,
        /// What differs, with the measured difference and the bound.
        reason: String,
    },
    /// A training checkpoint is damaged or missing (a checksum or a tensor does not match), or a
    /// run has none to resume from.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint folder, or the run directory when it has none.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
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

/// The kinds of failure the `graft` command tells apart by its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything else: I/O, a device or tensor error, a failed download (exit code 1).
    Other,
    /// The command line itself is wrong: unknown flag, missing argument (exit code 2; reported
    /// by the argument parser, never by the library).
    Usage,
    /// The input is wrong: a config key or flag value, a data file, a model or tokenizer file
    /// (exit code 3).
    Input,
    /// Training diverged (exit code 4).
    Diverged,
    /// The run directory is in use by another graft run (exit code 5).
    RunDirLocked,
    /// An export did not read back as the trained model (exit code 6).
    ExportMismatch,
    /// A checkpoint is damaged, or there is none to resume from (exit code 7).
    Checkpoint,
}

impl ErrorKind {
    /// Every kind, in exit-code order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Other,
        ErrorKind::Usage,
        ErrorKind::Input,
        ErrorKind::Diverged,
        ErrorKind::RunDirLocked,
        ErrorKind::ExportMismatch,
        ErrorKind::Checkpoint,
    ];

    /// The process exit code of this kind of failure (0 is success).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Input => 3,
            ErrorKind::Diverged => 4,
            ErrorKind::RunDirLocked => 5,
            ErrorKind::ExportMismatch => 6,
            ErrorKind::Checkpoint => 7,
        }
    }

    /// One line saying what the exit code means, for help texts and docs.
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Other => "any other failure (I/O, device, download)",
            ErrorKind::Usage => "bad command line (unknown flag, missing argument)",
            ErrorKind::Input => "bad input: config key, flag value, data, model or tokenizer file",
            ErrorKind::Diverged => "training diverged (NaN or infinite loss or gradient)",
            ErrorKind::RunDirLocked => "the run directory is in use by another graft run",
            ErrorKind::ExportMismatch => "an export did not read back as the trained model",
            ErrorKind::Checkpoint => "a checkpoint is damaged, or there is none to resume from",
        }
    }

    /// The exit-code table as help text: `  0  success` then one line per kind.
    pub fn help_table() -> String {
        let mut s = String::from("Exit codes:\n  0  success\n");
        for k in Self::ALL {
            s.push_str(&format!("  {}  {}\n", k.exit_code(), k.meaning()));
        }
        s
    }
}

impl GraftError {
    /// Which kind of failure this is (and so the `graft` command's exit code).
    pub fn kind(&self) -> ErrorKind {
        use crate::assets::AssetError;
        match self {
            GraftError::Diverged { .. } => ErrorKind::Diverged,
            GraftError::RunDirLocked { .. } => ErrorKind::RunDirLocked,
            GraftError::ExportMismatch { .. } => ErrorKind::ExportMismatch,
            GraftError::Checkpoint { .. } => ErrorKind::Checkpoint,
            GraftError::Input(_)
            | GraftError::Model { .. }
            | GraftError::Audio { .. }
            | GraftError::Gguf(_)
            | GraftError::Safetensors(_)
            | GraftError::Torch(_)
            | GraftError::Ctranslate2(_)
            | GraftError::Tokenizer(_)
            | GraftError::Data(_) => ErrorKind::Input,
            GraftError::Asset(AssetError::Unknown { .. } | AssetError::NotAModel { .. }) => ErrorKind::Input,
            GraftError::Asset(_)
            | GraftError::Candle(_)
            | GraftError::Io { .. }
            | GraftError::Json(_)
            | GraftError::Plot { .. } => ErrorKind::Other,
        }
    }

    /// The `graft` command's exit code for this error ([`ErrorKind::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GraftError::Io { path: path.into(), source }
    }

    /// Builds a model-loading error for `path`.
    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        GraftError::Model { path: path.into(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_own_exit_code() {
        let cases = [
            (GraftError::Input("train.lr must be positive".into()), 3),
            (GraftError::model("m.gguf", "no layers"), 3),
            (GraftError::Audio { path: "a.wav".into(), reason: "not a WAV file".into() }, 3),
            (GraftError::Tokenizer(crate::tokenizer::TokenizerError::Invalid("no vocab".into())), 3),
            (GraftError::Asset(crate::assets::AssetError::Unknown { name: "x".into(), known: "y".into() }), 3),
            (
                GraftError::Ctranslate2(crate::io::ctranslate2::Ct2Error {
                    path: "model.bin".into(),
                    kind: crate::io::ctranslate2::Ct2ErrorKind::Version { found: 9 },
                }),
                3,
            ),
            (GraftError::Diverged { unit: "step", step: 3, what: "loss is NaN".into(), hint: "lower train.lr" }, 4),
            (GraftError::RunDirLocked { path: "runs/a".into() }, 5),
            (
                GraftError::ExportMismatch {
                    path: "out.gguf".into(),
                    reason: "max |Δlogit| 0.5 (allowed 0.001)".into(),
                },
                6,
            ),
            (GraftError::Checkpoint { path: "runs/a/checkpoints/step-00000002".into(), reason: "damaged".into() }, 7),
            (GraftError::io("f", std::io::Error::other("disk full")), 1),
            (GraftError::Asset(crate::assets::AssetError::Offline { name: "x".into(), path: "p".into() }), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
        let mut codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7], "listed in exit-code order");
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn messages_keep_their_details() {
        let e = GraftError::Diverged {
            unit: "step",
            step: 7,
            what: "gradient norm is inf".into(),
            hint: "lower train.lr; the last checkpoint is intact",
        };
        assert_eq!(
            e.to_string(),
            "step 7: gradient norm is inf; stopping — lower train.lr; the last checkpoint is intact"
        );
        let e =
            GraftError::ExportMismatch { path: "m.gguf".into(), reason: "tensor `blk.0.attn_q.weight` differs".into() };
        assert_eq!(e.to_string(), "export check failed: m.gguf: tensor `blk.0.attn_q.weight` differs");
        let table = ErrorKind::help_table();
        assert!(table.contains("  4  training diverged"), "{table}");
    }
}
