//! Whisper (speech recognition): an audio encoder over log-mel spectrograms and a text decoder
//! with cross-attention, as CTranslate2's `WhisperSpec` defines it, loaded from a CTranslate2
//! Whisper folder ([`crate::io::ctranslate2::whisper::WhisperFolder`]) or a Hugging Face
//! Whisper folder ([`HfWhisperFolder`], which it also writes: [`Whisper::hf_tensors`]).
//!
//! ```text
//! mel [b, 80, 3000] ─▶ conv1 (k3) ─▶ GELU ─▶ conv2 (k3, stride 2) ─▶ GELU ─▶ + positions
//!   ─▶ pre-norm blocks ─▶ LayerNorm ─▶ audio [b, 1500, d]
//! tokens [b, t] ─▶ embeddings + learned positions ─▶ pre-norm blocks (causal self-attention,
//!   cross-attention over audio, feed-forward) ─▶ LayerNorm ─▶ × embeddingsᵀ ─▶ logits
//! ```
//!
//! Every projection is an adaptable [`crate::models::linear::Proj`] named as in Hugging Face
//! checkpoints (`decoder.layers.0.encoder_attn.q_proj`), so adapters attach by name as for the
//! Llama family. As there, one set of weights serves two paths: [`Pass::Train`] (differentiable
//! ops, [`Whisper::decode_train`] over whole sequences) and [`Pass::Infer`] (fused kernels and
//! the KV cache of [`Whisper::decode_step`]); both compute the same function (tested).

mod hf;
mod layers;
mod load;
mod model;
mod source;

pub use crate::models::llama::Pass;
pub use hf::{HfWhisperFolder, HfWhisperSizes};
pub use layers::{Attention, DecoderLayer, EncoderLayer, FeedForward};
pub use model::{Conv1d, Whisper, WhisperCache, WhisperDecoder, WhisperEncoder};

#[cfg(test)]
mod tests;
