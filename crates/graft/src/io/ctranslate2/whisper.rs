//! A CTranslate2 Whisper folder (what `ct2-transformers-converter` writes for a Whisper model):
//! `model.bin` with spec `WhisperSpec`, `config.json` (suppressed tokens, language tokens,
//! alignment heads), `tokenizer.json` and `vocabulary.txt`. The network's sizes are read from the
//! variables' shapes, since the config does not hold them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Ct2Error, Ct2ErrorKind, Ct2Model};
use crate::Result;

/// The spec name of Whisper models.
pub const WHISPER_SPEC: &str = "WhisperSpec";

/// `config.json` of a CTranslate2 Whisper folder: the decoding settings CTranslate2 applies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhisperConfig {
    /// Token ids never generated (CTranslate2 masks them at every decoding step).
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Token ids masked at the first generated position only (the blank and end of text).
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
    /// The language tokens' ids (`<|en|>`, `<|zh|>`, ...), in the order of the model's languages.
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    /// `[decoder layer, head]` pairs whose cross-attention follows the words' timing.
    #[serde(default)]
    pub alignment_heads: Vec<[u32; 2]>,
}

/// The sizes of a Whisper network, read from its variables' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperDims {
    /// Mel bins of the input spectrogram (the first convolution's input channels: 80 or 128).
    pub n_mels: usize,
    /// Width of the encoder and decoder.
    pub d_model: usize,
    /// Width of the feed-forward blocks.
    pub ffn_dim: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Attention heads of the encoder.
    pub encoder_heads: usize,
    /// Attention heads of the decoder.
    pub decoder_heads: usize,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Encoder positions (1500 frames for 30 s of audio).
    pub audio_ctx: usize,
    /// Decoder positions (448 tokens).
    pub text_ctx: usize,
}

/// A CTranslate2 Whisper folder, read and checked.
#[derive(Debug)]
pub struct WhisperFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its `model.bin`.
    pub model: Ct2Model,
    /// Its `config.json`.
    pub config: WhisperConfig,
    /// The network's sizes.
    pub dims: WhisperDims,
    /// Its `tokenizer.json` (a Hugging Face tokenizer).
    pub tokenizer_json: PathBuf,
    /// Its `vocabulary.txt` (one token per line, in id order).
    pub vocabulary: PathBuf,
}

impl WhisperFolder {
    /// Reads the folder `dir`: `model.bin` (spec `WhisperSpec`), `config.json`, and checks that
    /// `tokenizer.json` and `vocabulary.txt` are there.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let folder_error = |path: PathBuf, reason: String| -> crate::GraftError {
            Ct2Error { path, kind: Ct2ErrorKind::Folder(reason) }.into()
        };
        for file in ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"] {
            if !dir.join(file).is_file() {
                return Err(folder_error(dir.to_path_buf(), format!("no {file}; not a CTranslate2 Whisper folder")));
            }
        }
        let model = Ct2Model::open(dir.join("model.bin"))?;
        match model.spec() {
            Some(spec) if spec.name == WHISPER_SPEC => {}
            other => {
                let found = other.map_or("no spec (format version 1)".to_string(), |s| format!("spec `{}`", s.name));
                return Err(folder_error(model.path().to_path_buf(), format!("has {found}, not `{WHISPER_SPEC}`")));
            }
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| crate::GraftError::io(&config_path, e))?;
        let config: WhisperConfig = serde_json::from_str(&text)
            .map_err(|e| folder_error(config_path.clone(), format!("invalid config: {e}")))?;
        let dims = WhisperDims::of(&model)?;
        Ok(WhisperFolder {
            dir: dir.to_path_buf(),
            model,
            config,
            dims,
            tokenizer_json: dir.join("tokenizer.json"),
            vocabulary: dir.join("vocabulary.txt"),
        })
    }
}

impl WhisperDims {
    /// Reads the sizes from the shapes of a `WhisperSpec` model's variables.
    pub fn of(model: &Ct2Model) -> Result<Self> {
        let bad = |name: &str, reason: String| model.error(Ct2ErrorKind::Variable { name: name.into(), reason });
        let dim = |name: &str, axis: usize| -> Result<usize> {
            let v = model.need(name)?;
            v.shape.get(axis).copied().ok_or_else(|| bad(name, format!("shape {:?} has no axis {axis}", v.shape)))
        };
        let heads = |name: &str| -> Result<usize> {
            let n = model.scalar_i64(name)?;
            usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| bad(name, format!("{n} heads")))
        };
        let layers = |side: &str| {
            (0..)
                .take_while(|i| model.variable(&format!("{side}/layer_{i}/self_attention/linear_0/weight")).is_some())
                .count()
        };
        Ok(WhisperDims {
            n_mels: dim("encoder/conv1/weight", 1)?,
            d_model: dim("encoder/conv1/weight", 0)?,
            ffn_dim: dim("encoder/layer_0/ffn/linear_0/weight", 0)?,
            encoder_layers: layers("encoder"),
            decoder_layers: layers("decoder"),
            encoder_heads: heads("encoder/num_heads")?,
            decoder_heads: heads("decoder/num_heads")?,
            vocab_size: dim("decoder/embeddings/weight", 0)?,
            audio_ctx: dim("encoder/position_encodings/encodings", 0)?,
            text_ctx: dim("decoder/position_encodings/encodings", 0)?,
        })
    }
}
