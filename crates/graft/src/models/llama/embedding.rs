//! The token-embedding table, dense or kept in the GGUF blocks it was stored in.
//!
//! A model loaded with quantized weights (lean inference, QLoRA) would otherwise hold the table
//! twice: its GGUF blocks for the tied LM head and a dense f32 copy for lookups (for SmolLM2-135M,
//! 30 MB of Q8_0 blocks beside 113 MB of f32). Kept quantized, a lookup dequantizes only the rows
//! it reads, and the few uses that need the whole table dense (a tied head over many rows,
//! logits for training) dequantize it for that product and drop it after.

use crate::ops::FrozenWeight;
use crate::{GraftError, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// The `[vocab, hidden]` token-embedding table.
#[derive(Debug, Clone)]
pub(crate) enum EmbeddingTable {
    /// Dense in the model dtype; a variable when the embeddings train.
    Dense(Tensor),
    /// The file's quantized blocks (frozen).
    Quantized(Arc<QTensor>),
}

impl EmbeddingTable {
    /// The rows of `ids` (u32, any shape, flattened) as `[n, hidden]` in `dtype`, detached from
    /// the table when it is quantized. An id outside the vocabulary is an input error.
    pub fn rows(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let ids = ids.flatten_all()?;
        let table = self.head_weight();
        let vocab = table.dims().0;
        if let Some(&id) = ids.to_vec1::<u32>()?.iter().find(|&&id| id as usize >= vocab) {
            return Err(GraftError::Input(format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        Ok(table.rows(&ids, dtype)?)
    }

    /// The whole table dense in `dtype` (a copy when quantized, freed when the caller drops it).
    pub fn dense(&self, dtype: DType) -> Result<Tensor> {
        Ok(self.head_weight().dense(dtype)?)
    }

    /// The table as the frozen (or, when a dense variable, trainable) weight of a tied LM head.
    pub fn head_weight(&self) -> FrozenWeight {
        match self {
            EmbeddingTable::Dense(w) => FrozenWeight::Dense(w.clone()),
            EmbeddingTable::Quantized(q) => FrozenWeight::Quantized(q.clone()),
        }
    }

    /// Makes the table a trainable variable in `dtype` (dequantizing it if it is quantized).
    pub fn make_var(&mut self, dtype: DType) -> Result<Var> {
        let v = Var::from_tensor(&self.dense(dtype)?)?;
        *self = EmbeddingTable::Dense(v.as_tensor().clone());
        Ok(v)
    }
}
