//! Where Llama weights come from and how their names and layouts map to Hugging Face's.
//!
//! graft's internal layout is Hugging Face's: tensor names as in `model.safetensors`, and
//! `q_proj`/`k_proj` rows in HF order (half-rotation RoPE: element `i` of a head pairs with
//! `i + head_dim/2`). llama.cpp's GGUF files store `attn_q`/`attn_k` rows permuted for
//! interleaved-pair RoPE; [`GgufWeights`] undoes that on load (for dense and quantized tensors),
//! and [`permute_rows_hf_to_gguf`] redoes it on export, so weights that leave graft are always in
//! the layout their format expects. Gemma 3 files keep q/k rows in the original order (llama.cpp
//! runs them with NeoX RoPE), so they are read as stored.

use super::config::{Family, KeyNames, LlamaConfig};
use crate::io::gguf::GgufFile;
use crate::models::linear::BaseWeight;
use crate::{GraftError, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How projection weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantized to a dense tensor of the model dtype (exact; what training uses).
    Dense,
    /// Kept in the file's quantized blocks where the file has them (fast, lean inference; the
    /// QLoRA base).
    Quantized,
}

/// Maps a Hugging Face Llama tensor name to its GGUF name.
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    hf_to_gguf_name_in(Family::Llama, hf)
}

/// Maps a Hugging Face tensor name of a `family` decoder to its GGUF name (the families name
/// `post_attention_layernorm` differently: Llama's is the pre-MLP norm, Gemma's the norm on the
/// attention output).
pub fn hf_to_gguf_name_in(family: Family, hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = tail.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if family == Family::Llama => "ffn_norm",
        "post_attention_layernorm" => "post_attention_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// Row order change GGUF → HF for a q/k weight with `n_heads` heads of `head_dim`: returns, for
/// each HF row, the GGUF row it comes from.
fn gguf_rows_for_hf(n_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut src = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        for p in 0..2 {
            for i in 0..half {
                src.push(h * head_dim + 2 * i + p);
            }
        }
    }
    src
}

/// Un-permutes the rows of a dense GGUF q/k weight `[n_heads*head_dim, in]` into HF order.
pub fn permute_rows_gguf_to_hf(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / n_heads;
    Ok(w.reshape((n_heads, hd / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

/// Permutes the rows of an HF q/k weight (or a LoRA `B` of one) into llama.cpp's GGUF order.
pub fn permute_rows_hf_to_gguf(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / n_heads;
    Ok(w.reshape((n_heads, 2, hd / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

/// Reorders the rows of a quantized `[out, in]` tensor (rows are whole blocks, so this is a byte
/// shuffle; no value changes).
fn permute_quantized_rows(q: &QTensor, src_rows: &[usize]) -> Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let data = q.data()?;
    let row_bytes = data.len() / dims[0];
    let mut out = Vec::with_capacity(data.len());
    for &r in src_rows {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    // `qtensor_from_ggml` takes candle's outermost-first dims, which is what `q.shape()` holds
    // (the innermost-first GGUF order is reversed when the file is read).
    Ok(qtensor_from_ggml(q.dtype(), &out, dims, &q.device())?)
}

/// A source of Llama tensors addressed by Hugging Face name.
pub trait WeightSource {
    /// The file or folder the tensors come from (for error messages).
    fn origin(&self) -> &Path;
    /// Whether a tensor exists.
    fn contains(&self, hf_name: &str) -> bool;
    /// The shape of a tensor (HF layout, outermost first), read without its data; `None` when
    /// the source has no such tensor.
    fn shape(&self, hf_name: &str) -> Option<Vec<usize>>;
    /// The tensor's name as the source stores it (for error messages).
    fn stored_name(&self, hf_name: &str) -> String {
        hf_name.to_string()
    }
    /// How the configuration that goes with these tensors spells hyperparameters (for error
    /// messages): `config.json` names unless the source says otherwise.
    fn key_names(&self) -> KeyNames {
        KeyNames::ConfigJson
    }
    /// A dense tensor of `dtype`, in HF layout.
    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor>;
    /// A projection weight in the requested format, in HF layout.
    fn projection(&self, hf_name: &str, format: WeightFormat, dtype: DType, device: &Device) -> Result<BaseWeight> {
        let _ = format;
        Ok(BaseWeight::Dense(self.dense(hf_name, dtype, device)?))
    }
}

/// Llama-family tensors read from a GGUF file, renamed and (Llama) un-permuted to HF layout.
pub struct GgufWeights<'a> {
    gguf: &'a GgufFile,
    family: Family,
    n_heads: usize,
    n_kv_heads: usize,
}

impl<'a> GgufWeights<'a> {
    /// Wraps an opened GGUF file of the model `cfg` describes (its family and head counts).
    pub fn new(gguf: &'a GgufFile, cfg: &LlamaConfig) -> Self {
        Self { gguf, family: cfg.family, n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads }
    }

    fn name(&self, hf: &str) -> Option<String> {
        hf_to_gguf_name_in(self.family, hf)
    }

    fn gguf_name(&self, hf: &str) -> Result<String> {
        self.name(hf).ok_or_else(|| GraftError::model(self.gguf.path(), format!("no GGUF name for tensor `{hf}`")))
    }

    /// Heads whose rows llama.cpp permuted, if `hf` is a q/k projection weight of a Llama.
    fn permuted_heads(&self, hf: &str) -> Option<usize> {
        if self.family != Family::Llama {
            None
        } else if hf.ends_with("self_attn.q_proj.weight") {
            Some(self.n_heads)
        } else if hf.ends_with("self_attn.k_proj.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        }
    }
}

impl WeightSource for GgufWeights<'_> {
    fn origin(&self) -> &Path {
        self.gguf.path()
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.name(hf_name).is_some_and(|g| self.gguf.has_tensor(&g))
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        // Un-permuting q/k rows keeps the shape.
        self.name(hf_name).and_then(|g| self.gguf.header().tensor(&g).map(|t| t.dims.clone()))
    }

    fn stored_name(&self, hf_name: &str) -> String {
        self.name(hf_name).unwrap_or_else(|| hf_name.to_string())
    }

    fn key_names(&self) -> KeyNames {
        let arch = self.gguf.meta_str("general.architecture").unwrap_or("llama");
        KeyNames::Gguf { arch: arch.to_string() }
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        // Dequantize in f32 arithmetic (what the reference does), then widen or narrow.
        let w = self.gguf.dequantize(&self.gguf_name(hf_name)?, DType::F32, device)?;
        let w = match self.permuted_heads(hf_name) {
            Some(n) => permute_rows_gguf_to_hf(&w, n)?,
            None => w,
        };
        Ok(w.to_dtype(dtype)?)
    }

    fn projection(&self, hf_name: &str, format: WeightFormat, dtype: DType, device: &Device) -> Result<BaseWeight> {
        let q = self.gguf.qtensor(&self.gguf_name(hf_name)?, device)?;
        let dense_types = [
            candle_core::quantized::GgmlDType::F32,
            candle_core::quantized::GgmlDType::F16,
            candle_core::quantized::GgmlDType::BF16,
        ];
        if format == WeightFormat::Dense || dense_types.contains(&q.dtype()) {
            return Ok(BaseWeight::Dense(self.dense(hf_name, dtype, device)?));
        }
        let q = match self.permuted_heads(hf_name) {
            Some(n) => {
                let out = q.shape().dims()[0];
                permute_quantized_rows(&q, &gguf_rows_for_hf(n, out / n))?
            }
            None => q,
        };
        Ok(BaseWeight::Quantized(Arc::new(q)))
    }
}

/// Llama tensors read from Hugging Face safetensors files (one file or a sharded set).
pub struct SafetensorsWeights {
    origin: PathBuf,
    tensors: candle_core::safetensors::MmapedSafetensors,
}

impl SafetensorsWeights {
    /// Memory-maps `files` (all shards of one checkpoint); `origin` names the folder in errors.
    pub fn open(origin: &Path, files: &[PathBuf]) -> Result<Self> {
        // SAFETY: the files are opened read-only and not modified while the model is loaded.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
            .map_err(|e| GraftError::model(origin, format!("cannot read safetensors: {e}")))?;
        Ok(Self { origin: origin.to_path_buf(), tensors })
    }
}

impl WeightSource for SafetensorsWeights {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.tensors.get(hf_name).is_ok()
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.tensors.get(hf_name).ok().map(|t| t.shape().to_vec())
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self
            .tensors
            .load(hf_name, device)
            .map_err(|e| GraftError::model(&self.origin, format!("tensor `{hf_name}`: {e}")))?;
        Ok(t.to_dtype(dtype)?)
    }
}
