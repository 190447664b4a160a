//! Building the Whisper network from a checkpoint, whatever its naming: a [`WeightSource`] gives
//! each part (CTranslate2's variables in `load.rs`, Hugging Face's tensors in `hf.rs`) and
//! [`build`] assembles them in one place — the head checks, the blocks, the output projection
//! tied to the token embeddings.

use super::layers::{DecoderLayer, EncoderLayer};
use super::model::{Conv1d, Whisper, WhisperDecoder, WhisperEncoder};
use crate::io::ctranslate2::whisper::WhisperDims;
use crate::models::bert::model::LayerNorm;
use crate::models::linear::{BaseWeight, Proj};
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};

/// The encoder or the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Encoder,
    Decoder,
}

/// The parts of a Whisper network as one checkpoint names them, each checked against `dims`.
pub(super) trait WeightSource {
    /// An error about the entry `name` of this checkpoint.
    fn bad(&self, name: &str, reason: String) -> GraftError;
    /// Where the checkpoint states a side's head count (for errors).
    fn heads_key(&self, side: Side) -> &'static str;
    /// Encoder block `i`.
    fn encoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<EncoderLayer>;
    /// Decoder block `i`.
    fn decoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<DecoderLayer>;
    /// The encoder's convolution `n` (1: mel bins to width, stride 1; 2: width, stride 2).
    fn conv(&mut self, n: usize, dims: &WhisperDims) -> Result<Conv1d>;
    /// A side's position embeddings (`[audio_ctx, d]` or `[text_ctx, d]`).
    fn positions(&mut self, side: Side, dims: &WhisperDims) -> Result<Tensor>;
    /// A side's final LayerNorm.
    fn final_norm(&mut self, side: Side, dims: &WhisperDims) -> Result<LayerNorm>;
    /// The token embeddings `[vocab, d]`.
    fn embeddings(&mut self, dims: &WhisperDims) -> Result<Tensor>;
}

/// The network `src` describes with the sizes `dims`, on `device` in `dtype`.
pub(super) fn build(src: &mut impl WeightSource, dims: WhisperDims, device: &Device, dtype: DType) -> Result<Whisper> {
    let d = dims.d_model;
    for (side, heads) in [(Side::Encoder, dims.encoder_heads), (Side::Decoder, dims.decoder_heads)] {
        if heads == 0 || !d.is_multiple_of(heads) {
            return Err(src.bad(src.heads_key(side), format!("{heads} heads do not divide the width {d}")));
        }
    }
    let enc_layers = (0..dims.encoder_layers).map(|i| src.encoder_layer(i, &dims)).collect::<Result<_>>()?;
    let encoder = WhisperEncoder {
        conv1: src.conv(1, &dims)?,
        conv2: src.conv(2, &dims)?,
        positions: src.positions(Side::Encoder, &dims)?,
        layers: enc_layers,
        norm: src.final_norm(Side::Encoder, &dims)?,
    };
    let dec_layers = (0..dims.decoder_layers).map(|i| src.decoder_layer(i, &dims)).collect::<Result<_>>()?;
    let embeddings = src.embeddings(&dims)?;
    // The output projection is tied to the token embeddings: the same tensor serves both.
    let proj_out = Proj::new("proj_out", BaseWeight::Dense(embeddings.clone()), None)?;
    let decoder = WhisperDecoder {
        embeddings,
        positions: src.positions(Side::Decoder, &dims)?,
        layers: dec_layers,
        norm: src.final_norm(Side::Decoder, &dims)?,
        proj_out,
    };
    Ok(Whisper { dims, encoder, decoder, device: device.clone(), dtype })
}
