//! The one adaptable linear projection every model uses.
//!
//! A [`Proj`] holds a frozen base weight — dense (`[out, in]` in the model dtype) or GGUF-quantized
//! blocks — plus zero or more adapters attached by name. It computes `y = x Wᵀ (+ b)` and then
//! lets each adapter add its contribution (`y + (α/r)·B A x` for LoRA). Adapters are written once
//! and work on dense and quantized bases alike.

use crate::ops::FrozenWeight;
use crate::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::sync::Arc;

/// A frozen base weight in one of the formats graft keeps in memory.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// A dense `[out, in]` tensor in the model's dtype.
    Dense(Tensor),
    /// GGUF-quantized blocks, `[out, in]` logically; multiplied without dequantizing the whole
    /// weight in the inference path.
    Quantized(Arc<QTensor>),
}

impl BaseWeight {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let dims = match self {
            BaseWeight::Dense(w) => w.dims().to_vec(),
            BaseWeight::Quantized(q) => q.shape().dims().to_vec(),
        };
        (dims[0], dims[1])
    }
}

/// Something attached to a [`Proj`] that modifies its output (LoRA and friends).
pub trait ProjAdapter: Send + Sync + std::fmt::Debug {
    /// Returns the adapted output given the projection input `x` and the base output `y`.
    fn apply(&self, x: &Tensor, y: Tensor) -> Result<Tensor>;
    /// The adapter's contribution as a dense `[out, in]` weight update, when it has one
    /// (what merging folds into the base).
    fn delta_weight(&self) -> Result<Option<Tensor>>;
    /// The factors `(A [r, in], B [out, r], s)` when the adapter computes exactly
    /// `y + s · x̃ Aᵀ Bᵀ`, `x̃` being `x` under [`ProjAdapter::input_dropout`] (LoRA), so the
    /// projection can run the base and the update as one fused training op. `None` by default.
    fn low_rank(&self) -> Option<(Tensor, Tensor, f64)> {
        None
    }
    /// The dropout this step applies to the input `x` of a [`ProjAdapter::low_rank`] update;
    /// `None` (the default) when the update reads `x` itself.
    fn input_dropout(&self, _x: &Tensor) -> Result<Option<crate::ops::InputDropout>> {
        Ok(None)
    }
    /// The adapter's trainable tensors (for gradient checkpointing, which must know what a
    /// recomputed block differentiates).
    fn trainable_tensors(&self) -> Vec<Tensor>;
    /// Whether the adapter takes part in forward passes now. An inactive adapter is skipped
    /// everywhere (forward, merge, checkpointing) as if detached: one projection can carry a
    /// bank of adapters of which one serves the current task. Active by default.
    fn is_active(&self) -> bool {
        true
    }
}

/// Rows of input from which a quantized projection's inference forward dequantizes its weight
/// for a dense product on the CPU, unless the weight is Q4_1 and the CPU runs the many-row
/// kernel ([`crate::ops::q4_1_many_rows`]). Measured on SmolLM2-135M Q4_1 (2 Zen 4 cores, forward
/// tokens/s, the four-row kernel vs dequantized): 16 rows 188 vs 126, 32 rows 247 vs 234, 64 rows
/// 222 vs 320. The 512-bit tile kernel against dequantized: 64 rows 595 vs 394, 256 rows 646 vs
/// 526 (docs/benchmarks.md).
pub const DEQUANTIZE_FROM_ROWS: usize = 48;

/// Whether `x` (rows of `in_features`) has [`DEQUANTIZE_FROM_ROWS`] rows or more: enough for a
/// dense product to beat the quantized one in inference.
pub(crate) fn dequantizes_for(x: &Tensor, in_features: usize) -> bool {
    x.elem_count() / in_features.max(1) >= DEQUANTIZE_FROM_ROWS
}

/// `x Wᵀ` for a dense `W [out, in]` in inference: a single row through the threaded
/// [`crate::ops::gemv`], anything else through candle's matmul.
pub(crate) fn dense_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match crate::ops::gemv(x, w)? {
        Some(y) => Ok(y),
        None => Ok(x.broadcast_matmul(&w.t()?)?),
    }
}

/// A named linear projection: frozen base weight, optional bias, attached adapters.
#[derive(Debug, Clone)]
pub struct Proj {
    name: String,
    base: BaseWeight,
    bias: Option<Tensor>,
    adapters: Vec<Arc<dyn ProjAdapter>>,
    /// Cached quantized matmul kernel for the inference path.
    qmatmul: Option<Arc<QMatMul>>,
}

impl Proj {
    /// A projection called `name` (e.g. `layers.0.self_attn.q_proj`) over `base`.
    pub fn new(name: impl Into<String>, base: BaseWeight, bias: Option<Tensor>) -> Result<Self> {
        let qmatmul = match &base {
            BaseWeight::Quantized(q) => Some(Arc::new(QMatMul::from_arc(q.clone())?)),
            BaseWeight::Dense(_) => None,
        };
        Ok(Self { name: name.into(), base, bias, adapters: Vec::new(), qmatmul })
    }

    /// The stable name adapters and checkpoints use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The frozen base weight.
    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    /// The bias, if the checkpoint has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        self.base.dims()
    }

    /// Attaches an adapter; adapters apply in the order they were attached.
    pub fn attach(&mut self, adapter: Arc<dyn ProjAdapter>) {
        self.adapters.push(adapter);
    }

    /// Trainable tensors of this projection: its adapters' parameters, and the base weight when
    /// it is a variable (full fine-tuning).
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        let mut out: Vec<Tensor> = self.active_adapters().flat_map(|a| a.trainable_tensors()).collect();
        if let BaseWeight::Dense(w) = &self.base {
            if w.is_variable() {
                out.push(w.clone());
            }
        }
        out
    }

    /// Whether any adapter is attached.
    pub fn has_adapters(&self) -> bool {
        !self.adapters.is_empty()
    }

    /// The attached adapters that take part in forward passes now, in attach order.
    fn active_adapters(&self) -> impl Iterator<Item = &Arc<dyn ProjAdapter>> {
        self.adapters.iter().filter(|a| a.is_active())
    }

    /// The base weight plus every active adapter's dense update, as `[out, in]` in `dtype` (summed
    /// in f32 or better). Fails for adapters that have no dense form.
    pub fn effective_weight(&self, dtype: DType) -> Result<Tensor> {
        let work = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let mut w = self.dense_weight(work)?;
        for a in self.active_adapters() {
            let d = a.delta_weight()?.ok_or_else(|| {
                crate::GraftError::Input(format!("an adapter on {} cannot be merged into its weight", self.name))
            })?;
            w = (w + d.to_dtype(work)?)?;
        }
        Ok(w.to_dtype(dtype)?)
    }

    /// Removes every adapter.
    pub fn detach_all(&mut self) {
        self.adapters.clear();
    }

    /// Replaces the base weight (used when merging adapters or loading a fine-tuned base).
    pub fn set_base(&mut self, base: BaseWeight) -> Result<()> {
        *self = Self {
            adapters: std::mem::take(&mut self.adapters),
            ..Self::new(self.name.clone(), base, self.bias.clone())?
        };
        Ok(())
    }

    /// Replaces the bias (a trainable copy for full fine-tuning).
    pub fn set_bias(&mut self, bias: Option<Tensor>) {
        self.bias = bias;
    }

    /// The base weight as a dense `[out, in]` tensor of `dtype` (dequantizing if needed).
    pub fn dense_weight(&self, dtype: DType) -> Result<Tensor> {
        Ok(self.frozen_weight().dense(dtype)?)
    }

    /// The base weight as the training ops take it (no copy).
    pub fn frozen_weight(&self) -> FrozenWeight {
        match &self.base {
            BaseWeight::Dense(w) => FrozenWeight::Dense(w.clone()),
            BaseWeight::Quantized(q) => FrozenWeight::Quantized(q.clone()),
        }
    }

    /// Differentiable forward for training: `x [.., in] -> [.., out]`. Gradients flow to `x`, to
    /// adapter parameters and to a trainable (variable) base weight. A frozen base computes no
    /// weight gradient; a quantized base is dequantized only for the products that need it.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let trainable_base = matches!(&self.base, BaseWeight::Dense(w) if w.is_variable() || w.track_op());
        let active: Vec<&Arc<dyn ProjAdapter>> = self.active_adapters().collect();
        if let ([only], false) = (active.as_slice(), trainable_base) {
            if let Some((a, b, scale)) = only.low_rank() {
                let (weight, a, b) = (self.frozen_weight(), a.to_dtype(x.dtype())?, b.to_dtype(x.dtype())?);
                let y = match only.input_dropout(x)? {
                    Some(dropout) => crate::ops::lora_linear_dropout(x, &weight, &a, &b, scale, &dropout)?,
                    None => crate::ops::lora_linear(x, &weight, &a, &b, scale)?,
                };
                return Ok(match &self.bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                });
            }
        }
        let y = match &self.base {
            BaseWeight::Dense(w) if w.is_variable() || w.track_op() => {
                let (out, inp) = self.dims();
                let lead = &x.dims()[..x.rank() - 1];
                let rows = lead.iter().product::<usize>();
                let y = crate::ops::trained_linear(&x.reshape((rows, inp))?, &w.to_dtype(x.dtype())?)?;
                y.reshape([lead, &[out]].concat())?
            }
            _ => crate::ops::frozen_linear(x, &self.frozen_weight())?,
        };
        self.finish(x, y)
    }

    /// Inference forward: uses the quantized kernel when the base is quantized, except for
    /// [`DEQUANTIZE_FROM_ROWS`] rows or more on the CPU without the many-row Q4_1 kernel, where
    /// one dequantized copy of the weight and a dense product are faster (and leave the
    /// activations unrounded).
    pub fn forward_infer(&self, x: &Tensor) -> Result<Tensor> {
        let dequantizes =
            |q: &QTensor| x.device().is_cpu() && dequantizes_for(x, self.dims().1) && !crate::ops::q4_1_many_rows(q);
        let y = match (&self.base, &self.qmatmul) {
            (BaseWeight::Quantized(q), Some(qmm)) if !dequantizes(q) => {
                let xf = x.to_dtype(DType::F32)?;
                let y = match crate::ops::q4_1_matmul(&xf, q)? {
                    Some(y) => y,
                    None => qmm.forward(&xf)?,
                };
                y.to_dtype(x.dtype())?
            }
            _ => dense_product(x, &self.dense_weight(x.dtype())?)?,
        };
        self.finish(x, y)
    }

    fn finish(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let mut y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        for adapter in self.active_adapters() {
            y = adapter.apply(x, y)?;
        }
        Ok(y)
    }
}
