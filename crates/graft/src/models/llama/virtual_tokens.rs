//! Learned virtual tokens placed before every sequence: soft prompts (extra input embeddings)
//! or prefixes (extra keys and values in every attention layer).
//!
//! Both occupy positions `0..n`; the real tokens follow at `n..`. The tensors are stored in
//! PEFT's layout, so they are saved and loaded without reshuffling:
//! a soft prompt is `[n, hidden]`, a prefix `[n, layers · 2 · kv_heads · head_dim]` whose row
//! `j` holds, layer by layer, the key and then the value of virtual token `j` for every KV head.

use super::config::LlamaConfig;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};

/// Virtual tokens the model prepends to every sequence it runs.
#[derive(Debug, Clone)]
pub enum VirtualTokens {
    /// Soft prompt: `[n, hidden]` embeddings placed before the real tokens' embeddings.
    Prompt(Tensor),
    /// Prefix: `[n, layers · 2 · kv_heads · head_dim]` keys (already rotated, as a KV cache
    /// holds them) and values placed before every layer's own.
    Prefix(Tensor),
}

impl VirtualTokens {
    /// The learned tensor (a variable while training).
    pub fn tensor(&self) -> &Tensor {
        match self {
            Self::Prompt(t) | Self::Prefix(t) => t,
        }
    }

    /// Number of virtual tokens `n`.
    pub fn len(&self) -> usize {
        self.tensor().dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no virtual tokens (never for a checked value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape the tensor must have for a model of shape `cfg` with `n` virtual tokens.
    pub fn expected_dims(prefix: bool, n: usize, cfg: &LlamaConfig) -> [usize; 2] {
        if prefix {
            [n, cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim()]
        } else {
            [n, cfg.hidden_size]
        }
    }

    /// Checks the tensor fits a model of shape `cfg`.
    pub fn check(&self, cfg: &LlamaConfig) -> Result<()> {
        let n = self.len();
        let want = Self::expected_dims(matches!(self, Self::Prefix(_)), n, cfg);
        if n == 0 || self.tensor().dims() != want {
            return Err(GraftError::Input(format!(
                "virtual-token tensor has shape {:?}, expected {want:?} (n ≥ 1) for this model",
                self.tensor().dims()
            )));
        }
        Ok(())
    }

    /// The prefix keys and values of `layer`, each `[batch, kv_heads, n, head_dim]`; `None` for
    /// a soft prompt.
    pub(super) fn prefix_kv(
        &self,
        layer: usize,
        batch: usize,
        cfg: &LlamaConfig,
        dtype: DType,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Self::Prefix(t) = self else { return Ok(None) };
        let t = t.to_dtype(dtype)?;
        let (n, nkv, hd) = (self.len(), cfg.num_key_value_heads, cfg.head_dim());
        let per_layer = t.reshape((n, cfg.num_hidden_layers, 2, nkv, hd))?.narrow(1, layer, 1)?.squeeze(1)?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(per_layer
                .narrow(1, i, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .unsqueeze(0)?
                .broadcast_as((batch, nkv, n, hd))?
                .contiguous()?)
        };
        Ok(Some((part(0)?, part(1)?)))
    }
}
