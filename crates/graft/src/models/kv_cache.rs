//! Key/value cache for incremental decoding.

use crate::Result;
use candle_core::Tensor;

/// Per-layer attention keys and values of the tokens seen so far, shaped
/// `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` blocks.
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers], len: 0 }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[batch, kv_heads, new, head_dim]`) for `layer` and returns the whole
    /// cached keys and values of that layer.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let entry = match &self.layers[layer] {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.layers[layer] = Some(entry.clone());
        Ok(entry)
    }

    /// The cached keys and values of `layer`, `[batch, kv_heads, len, head_dim]` each.
    pub fn layer(&self, layer: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(layer).and_then(|l| l.as_ref())
    }

    /// Records that `n` more positions were appended to every layer.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// This cache (batch 1) repeated `batch` times along the batch axis: a shared prompt prefix
    /// computed once, then continued by `batch` different suffixes.
    pub fn repeat_batch(&self, batch: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.repeat((batch, 1, 1, 1))?, v.repeat((batch, 1, 1, 1))?))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, len: self.len })
    }

    /// Drops everything cached.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
}
