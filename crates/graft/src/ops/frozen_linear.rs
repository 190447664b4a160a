//! `y = x Wᵀ` for a frozen `W`: the backward returns only the input gradient.
//!
//! candle's matmul backward also computes `xᵀ·dy` for the weight and adds it into a zero tensor
//! the size of `W`, even when `W` is a constant; with LoRA that is a third of the backward's
//! matmul work and a weight-sized buffer per projection, for a gradient nobody reads. A quantized
//! `W` (QLoRA) stays in its GGUF blocks: forward and backward each dequantize it for the one
//! product that needs it and free it right after, so only one dequantized projection exists at a
//! time.

use candle_core::backend::BackendStorage;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};
use std::sync::Arc;

/// A projection weight `[out, in]` that does not train.
#[derive(Debug, Clone)]
pub enum FrozenWeight {
    /// Dense, in the activations' dtype (converted on use otherwise).
    Dense(Tensor),
    /// GGUF-quantized blocks, dequantized per use.
    Quantized(Arc<QTensor>),
}

impl FrozenWeight {
    /// The weight as a dense `[out, in]` tensor of `dtype`.
    pub fn dense(&self, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => w.to_dtype(dtype),
            FrozenWeight::Quantized(q) => match super::q4_1_dequantize(q)? {
                Some(w) => w.to_dtype(dtype),
                None => q.dequantize(&q.device())?.to_dtype(dtype),
            },
        }
    }

    /// Rows `start..start + len` of the weight as a dense `[len, in]` tensor of `dtype`: a view
    /// of a dense weight, or only those rows dequantized from a quantized one on the CPU (other
    /// devices dequantize the whole weight there and narrow it).
    pub fn dense_rows(&self, start: usize, len: usize, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => w.narrow(0, start, len)?.to_dtype(dtype),
            FrozenWeight::Quantized(q) if q.device().is_cpu() => {
                let (out, inp) = self.dims();
                if start + len > out {
                    candle_core::bail!("dense_rows: rows {start}..{} of a weight with {out}", start + len);
                }
                let row_bytes = quantized_row_bytes(q)?;
                let bytes = &q.data()?[start * row_bytes..(start + len) * row_bytes];
                let part = qtensor_from_ggml(q.dtype(), bytes, vec![len, inp], &Device::Cpu)?;
                FrozenWeight::Quantized(Arc::new(part)).dense(dtype)
            }
            FrozenWeight::Quantized(_) => self.dense(dtype)?.narrow(0, start, len),
        }
    }

    /// Rows `ids` (u32, any shape, flattened) of the weight as `[n, in]` in `dtype`. A dense
    /// weight is indexed (gradients flow to it when it trains); a quantized one on the CPU
    /// dequantizes only the rows it reads.
    pub fn rows(&self, ids: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        let ids = ids.flatten_all()?;
        match self {
            FrozenWeight::Dense(w) => w.index_select(&ids, 0)?.to_dtype(dtype),
            FrozenWeight::Quantized(q) if q.device().is_cpu() => {
                quantized_rows(q, &ids.to_vec1::<u32>()?)?.to_device(ids.device())?.to_dtype(dtype)
            }
            FrozenWeight::Quantized(_) => self.dense(dtype)?.index_select(&ids, 0),
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = match self {
            FrozenWeight::Dense(w) => w.dims().to_vec(),
            FrozenWeight::Quantized(q) => q.shape().dims().to_vec(),
        };
        (d[0], d[1])
    }
}

/// Bytes of one `in`-long row of a quantized `[out, in]` weight (whole blocks, as GGUF stores
/// matrices).
fn quantized_row_bytes(q: &QTensor) -> candle_core::Result<usize> {
    let (_, inp) = q.shape().dims2()?;
    let dtype = q.dtype();
    Ok(inp / dtype.block_size() * dtype.type_size())
}

/// Rows `ids` of a quantized `[out, in]` weight in CPU memory, dequantized to f32: the rows'
/// bytes are copied out and dequantized together.
fn quantized_rows(q: &QTensor, ids: &[u32]) -> candle_core::Result<Tensor> {
    let (out, inp) = q.shape().dims2()?;
    if ids.is_empty() {
        return Tensor::zeros((0, inp), DType::F32, &Device::Cpu);
    }
    let row_bytes = quantized_row_bytes(q)?;
    let data = q.data()?;
    let mut bytes = Vec::with_capacity(ids.len() * row_bytes);
    for &id in ids {
        let id = id as usize;
        if id >= out {
            candle_core::bail!("row {id} is outside a weight of {out} rows (token id outside the vocabulary?)");
        }
        bytes.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
    }
    qtensor_from_ggml(q.dtype(), &bytes, vec![ids.len(), inp], &Device::Cpu)?.dequantize(&Device::Cpu)
}

/// `x [.., in] → x Wᵀ [.., out]` recording a backward that yields only `dx = dy W`.
pub fn frozen_linear(x: &Tensor, weight: &FrozenWeight) -> candle_core::Result<Tensor> {
    let (_, inp) = weight.dims();
    let k = x.dim(candle_core::D::Minus1)?;
    if k != inp {
        candle_core::bail!("frozen_linear: input has {k} features, the weight expects {inp}");
    }
    if super::matmul_precision() == super::MatmulPrecision::Bf16Mixed {
        return mixed(x, weight);
    }
    x.contiguous()?.apply_op1(FrozenLinear { weight: weight.clone() })
}

/// [`frozen_linear`] with both products through [`super::mixed_matmul`], for
/// [`super::MatmulPrecision::Bf16Mixed`].
fn mixed(x: &Tensor, weight: &FrozenWeight) -> candle_core::Result<Tensor> {
    let (n, k) = weight.dims();
    let rows = x.elem_count() / k.max(1);
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank checked by dim(-1)") = n;
    let w = weight.dense(x.dtype())?;
    let value = super::mixed_matmul(&x.detach().reshape((rows, k))?, &w.t()?)?.reshape(dims)?;
    let weight = weight.clone();
    super::attach::attach1(
        "frozen-linear",
        x,
        value,
        Box::new(move |x, _, g| {
            let w = weight.dense(g.dtype())?;
            let dx = super::mixed_matmul(&g.reshape((rows, n))?, &w)?;
            Ok(Some(dx.reshape(x.shape())?.to_dtype(x.dtype())?))
        }),
    )
}

struct FrozenLinear {
    weight: FrozenWeight,
}

/// The storage-level product `x [m, k] · W [n, k]ᵀ`, shaped like `x` with its last dim `n`.
fn product<S: BackendStorage>(x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
    if !xl.is_contiguous() || !wl.is_contiguous() {
        candle_core::bail!("frozen_linear: operands must be contiguous");
    }
    let dims = xl.shape().dims();
    let k = dims[dims.len() - 1];
    let m = xl.shape().elem_count() / k.max(1);
    let (n, _) = wl.shape().dims2()?;
    let lhs = Layout::contiguous_with_offset((m, k), xl.start_offset());
    let rhs = Layout::contiguous_with_offset((n, k), wl.start_offset()).transpose(0, 1)?;
    let out = x.matmul(w, (1, m, n, k), &lhs, &rhs)?;
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("rank checked by dim(-1)") = n;
    Ok((out, Shape::from(out_dims)))
}

impl FrozenLinear {
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        xl: &Layout,
        pick: impl Fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let w = self.weight.dense(x.dtype())?;
        let w = w.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        let ws = pick(&ws).ok_or_else(|| candle_core::Error::Msg("frozen_linear: weight on another device".into()))?;
        product(x, xl, ws, wl)
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(x, xl, |s| match s {
            Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.fwd(x, xl, |s| match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, k) = self.weight.dims();
        let m = arg.elem_count() / k.max(1);
        let w = self.weight.dense(grad.dtype())?;
        let dx = grad.reshape((m, n))?.matmul(&w)?;
        Ok(Some(dx.reshape(arg.shape())?.to_dtype(arg.dtype())?))
    }
}
