//! The token-embedding table, dense or kept in the GGUF blocks it was stored in.
//!
//! A model loaded with quantized weights (lean inference, QLoRA) would otherwise hold the table
//! twice: its GGUF blocks for the tied LM head and a dense f32 copy for lookups (for SmolLM2-135M,
//! 30 MB of Q8_0 blocks beside 113 MB of f32). Kept quantized, a lookup dequantizes only the rows
//! it reads, and the few uses that need the whole table dense (a tied head over many rows,
//! logits for training) dequantize it for that product and drop it after.

use crate::ops::FrozenWeight;
use crate::{GraftError, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{DType, Device, Tensor, Var};
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
    /// the table when it is quantized.
    pub fn rows(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let ids = ids.flatten_all()?;
        match self {
            EmbeddingTable::Dense(w) => Ok(w.index_select(&ids, 0)?.to_dtype(dtype)?),
            EmbeddingTable::Quantized(q) if q.device().is_cpu() => {
                Ok(quantized_rows(q, &ids.to_vec1::<u32>()?)?.to_device(ids.device())?.to_dtype(dtype)?)
            }
            // Other devices keep the blocks in their own memory: dequantize there and pick.
            EmbeddingTable::Quantized(q) => Ok(q.dequantize(&q.device())?.to_dtype(dtype)?.index_select(&ids, 0)?),
        }
    }

    /// The whole table dense in `dtype` (a copy when quantized, freed when the caller drops it).
    pub fn dense(&self, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            EmbeddingTable::Dense(w) => w.to_dtype(dtype)?,
            EmbeddingTable::Quantized(q) => q.dequantize(&q.device())?.to_dtype(dtype)?,
        })
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

/// Rows `ids` of a quantized `[vocab, hidden]` table in CPU memory, dequantized to f32 on the CPU:
/// each row is whole blocks, so the rows' bytes are copied out and dequantized together.
fn quantized_rows(q: &QTensor, ids: &[u32]) -> Result<Tensor> {
    let (vocab, hidden) = q.shape().dims2()?;
    let dtype = q.dtype();
    if hidden % dtype.block_size() != 0 {
        return Err(GraftError::Input(format!(
            "embedding rows of {hidden} values do not split into {:?} blocks of {}",
            dtype,
            dtype.block_size()
        )));
    }
    if ids.is_empty() {
        return Ok(Tensor::zeros((0, hidden), DType::F32, &Device::Cpu)?);
    }
    let row_bytes = hidden / dtype.block_size() * dtype.type_size();
    let data = q.data()?;
    let mut bytes = Vec::with_capacity(ids.len() * row_bytes);
    for &id in ids {
        let id = id as usize;
        if id >= vocab {
            return Err(GraftError::Input(format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        bytes.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
    }
    let picked = qtensor_from_ggml(dtype, &bytes, vec![ids.len(), hidden], &Device::Cpu)?;
    Ok(picked.dequantize(&Device::Cpu)?)
}
