//! Model families behind one [`Model`] trait. Every projection in every model is an adaptable
//! [`linear::Proj`], named as in Hugging Face checkpoints (`layers.{i}.self_attn.q_proj`), so
//! adapters attach by name and exports are a rename at one boundary.

pub mod batch_norm;
pub mod bert;
pub mod efficientnet;
pub mod hparams;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod load;
pub(crate) mod named;
pub mod resnet;
pub mod vgg;
pub mod whisper;

pub use kv_cache::KvCache;

use crate::Result;
use candle_core::{DType, Device, Tensor};

/// Facts about a causal language model that generation and evaluation need.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Model family as named in GGUF `general.architecture` (`llama`, ...).
    pub architecture: String,
    /// Number of rows of the output logits.
    pub vocab_size: usize,
    /// Longest sequence (prompt + generated) the model supports.
    pub max_position_embeddings: usize,
    /// Number of transformer blocks (one KV-cache entry each).
    pub n_layers: usize,
}

/// A causal language model with two forward paths over one set of weights.
///
/// The training path is built only from differentiable operations; the inference path may use
/// fused forward-only kernels and a KV cache. Both compute the same function (tested).
pub trait Model: Send + Sync {
    /// Shape facts (vocabulary, context length, layers).
    fn info(&self) -> &ModelInfo;
    /// Where the weights live.
    fn device(&self) -> &Device;
    /// Precision of activations and dense weights.
    fn dtype(&self) -> DType;
    /// Differentiable forward: token ids `[batch, seq]` (u32) -> logits `[batch, seq, vocab]`.
    fn forward_train(&self, ids: &Tensor) -> Result<Tensor>;
    /// Inference forward: token ids `[batch, seq]` placed after the `cache.len()` tokens already
    /// in `cache`; appends to the cache and returns logits `[batch, seq, vocab]`.
    fn forward_infer(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor>;
    /// Inference forward returning only the last position's logits `[batch, vocab]` (what
    /// generation needs).
    fn forward_infer_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let logits = self.forward_infer(ids, cache)?;
        let t = logits.dim(1)?;
        Ok(logits.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
    /// Inference forward over `ids [batch, seq]` placed after what `cache` holds, returning the
    /// logits of row `i` at position `positions[i]` (of `ids`) only, `[batch, vocab]`: label
    /// scoring of right-padded prompts without the LM head at every position.
    fn logits_at(&self, ids: &Tensor, positions: &[usize], cache: &mut KvCache) -> Result<Tensor> {
        let logits = self.forward_infer(ids, cache)?;
        let rows = positions
            .iter()
            .enumerate()
            .map(|(i, &p)| logits.get(i)?.get(p))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
    /// An empty cache for this model.
    fn new_cache(&self) -> KvCache {
        KvCache::new(self.info().n_layers)
    }
    /// Names of every adaptable projection, e.g. `layers.0.self_attn.q_proj`.
    fn linear_names(&self) -> Vec<String>;
}
