//! One Llama decoder block: pre-norm GQA attention with RoPE, then a gated MLP. The Gemma 3
//! variant adds norms on the attention and MLP outputs and on each q/k head, GELU (tanh) for
//! SiLU, and a sliding-window mask with its own RoPE base in most layers
//! ([`super::config::Family`]).
//!
//! The block forward lives on [`BlockContext`] (hyperparameters, RoPE tables, device) rather than
//! on the whole model, so a cheap clone of it can travel into a gradient-checkpointing backward
//! and recompute one block there. Attention never repeats K/V for grouped queries: the `rep`
//! query heads that share a KV head are stacked along the sequence axis, so one matmul serves
//! the whole group.

use super::config::{Activation, LlamaConfig, NormRole};
use super::model::Pass;
use crate::models::linear::Proj;
use crate::models::KvCache;
use crate::ops::CausalMask;
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Norm vectors, indexed by [`NormRole`], named by [`LlamaConfig::norm_modules`].
    pub(super) norms: Vec<Tensor>,
    /// Attention projections: q, k, v, o.
    pub attn: [Proj; 4],
    /// MLP projections: gate, up, down.
    pub mlp: [Proj; 3],
}

/// Most `cos`/`sin` values a RoPE table holds (each table: 16 MiB in f32): the table covers
/// `min(context, MAX_ROPE_TABLE / (head_dim/2))` positions, and positions past it (a context
/// longer than 131072 positions at head width 64) are computed per call. The context length comes
/// from the model file, so it must not size an allocation by itself.
const MAX_ROPE_TABLE: usize = 1 << 22;

/// RoPE cosine/sine tables, `[positions, head_dim/2]`, computed in f64.
#[derive(Debug, Clone)]
pub(super) struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    theta: f64,
    head_dim: usize,
}

impl RopeTables {
    /// The tables of base `theta` for the head width and context of `cfg`.
    pub(super) fn new(cfg: &LlamaConfig, theta: f64, dtype: DType, device: &Device) -> Result<Self> {
        let head_dim = cfg.head_dim();
        let rows = cfg.max_position_embeddings.min(MAX_ROPE_TABLE / (head_dim / 2).max(1));
        let (cos, sin) = Self::angles(theta, head_dim, 0, rows, dtype, device)?;
        Ok(Self { cos, sin, theta, head_dim })
    }

    /// `cos` and `sin` of the angles of positions `start..start + n`, `[n, head_dim/2]` each.
    fn angles(
        theta: f64,
        head_dim: usize,
        start: usize,
        n: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for pos in start..start + n {
            for i in 0..half {
                let inv_freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, half), device)?.to_dtype(dtype)?) };
        Ok((table(cos)?, table(sin)?))
    }

    /// Rotates `x` `[b, heads, t, head_dim]` as positions `offset..offset+t` (half-rotation).
    fn apply(&self, x: &Tensor, offset: usize, pass: Pass) -> Result<Tensor> {
        let t = x.dim(2)?;
        let (cos, sin) = if offset + t <= self.cos.dim(0)? {
            (self.cos.narrow(0, offset, t)?, self.sin.narrow(0, offset, t)?)
        } else {
            Self::angles(self.theta, self.head_dim, offset, t, self.cos.dtype(), x.device())?
        };
        match pass {
            Pass::Infer => Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?),
            Pass::Train => Ok(crate::ops::rope(x, &cos, &sin)?),
        }
    }
}

impl Block {
    /// The block's tensors that train: adapter parameters, and weights made trainable (full
    /// fine-tuning, freeze mode).
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        let mut out: Vec<Tensor> = self.norms.iter().filter(|t| t.is_variable()).cloned().collect();
        for p in self.attn.iter().chain(self.mlp.iter()) {
            out.extend(p.trainable_tensors());
        }
        out
    }

    /// The norm vector of `role`, if the block has one.
    pub(super) fn norm(&self, role: NormRole) -> Option<&Tensor> {
        self.norms.get(role as usize)
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · w`, computed in at least f32.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, pass: Pass) -> Result<Tensor> {
    let dtype = x.dtype();
    let work = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let xw = x.to_dtype(work)?;
    let normed = match pass {
        // candle's fused kernel has no f64 version; the training op computes f64 exactly.
        Pass::Infer if work == DType::F64 => crate::ops::rms_norm(&xw, &w.to_dtype(work)?, eps)?.detach(),
        Pass::Infer => candle_nn::ops::rms_norm(&xw.contiguous()?, &w.to_dtype(work)?, eps as f32)?,
        Pass::Train => crate::ops::rms_norm(&xw, &w.to_dtype(work)?, eps)?,
    };
    Ok(normed.to_dtype(dtype)?)
}

/// The positions before a block's tokens: `offset` of them, whose keys and values are in `cache`
/// or, without a cache, are the `prefix` (prefix tuning: `[b, kv_heads, offset, head_dim]` each).
pub(super) struct Earlier<'a> {
    pub(super) offset: usize,
    pub(super) cache: Option<&'a mut KvCache>,
    pub(super) prefix: Option<&'a (Tensor, Tensor)>,
}

impl Earlier<'_> {
    /// No earlier positions.
    pub(super) fn none() -> Self {
        Earlier { offset: 0, cache: None, prefix: None }
    }
}

/// What a block forward needs besides the block's own weights.
#[derive(Debug, Clone)]
pub(super) struct BlockContext {
    pub(super) cfg: LlamaConfig,
    /// One table per RoPE base the layers use.
    pub(super) ropes: Vec<RopeTables>,
    pub(super) device: Device,
}

fn proj(p: &Proj, x: &Tensor, pass: Pass) -> Result<Tensor> {
    match pass {
        Pass::Train => p.forward_train(x),
        Pass::Infer => p.forward_infer(x),
    }
}

impl BlockContext {
    /// The context of `cfg`'s blocks: RoPE tables for every base its layers use.
    pub(super) fn new(cfg: LlamaConfig, dtype: DType, device: &Device) -> Result<Self> {
        let mut ropes: Vec<RopeTables> = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let theta = cfg.layer_rope_theta(i);
            if !ropes.iter().any(|r| r.theta == theta) {
                ropes.push(RopeTables::new(&cfg, theta, dtype, device)?);
            }
        }
        Ok(Self { cfg, ropes, device: device.clone() })
    }

    /// The RoPE tables of layer `layer`.
    fn rope(&self, layer: usize) -> Result<&RopeTables> {
        let theta = self.cfg.layer_rope_theta(layer);
        self.ropes
            .iter()
            .find(|r| r.theta == theta)
            .ok_or_else(|| crate::GraftError::Input(format!("no RoPE table for layer {layer}")))
    }

    /// RMSNorm with the block's `role` norm, or `x` unchanged when the block has none.
    fn norm(&self, blk: &Block, role: NormRole, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match blk.norm(role) {
            Some(w) => rms_norm(x, w, self.cfg.rms_norm_eps, pass),
            None => Ok(x.clone()),
        }
    }

    /// Runs `blk` (layer `layer`) over `x [b, t, hidden]`, after the `earlier` positions.
    pub(super) fn forward(
        &self,
        blk: &Block,
        layer: usize,
        x: &Tensor,
        earlier: Earlier,
        pass: Pass,
    ) -> Result<Tensor> {
        let x = self.attend(blk, layer, x, earlier, pass)?;
        self.feed_forward(blk, &x, pass)
    }

    /// The block's first half: `x` plus its attention output.
    pub(super) fn attend(&self, blk: &Block, layer: usize, x: &Tensor, earlier: Earlier, pass: Pass) -> Result<Tensor> {
        let Earlier { offset, cache, prefix } = earlier;
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let rep = nh / nkv;

        let h = self.norm(blk, NormRole::AttnIn, x, pass)?;
        let heads = |p: &Proj, n: usize| -> Result<Tensor> {
            Ok(proj(p, &h, pass)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let rope = self.rope(layer)?;
        let q = rope.apply(&self.norm(blk, NormRole::Q, &heads(&blk.attn[0], nh)?, pass)?, offset, pass)?;
        let k = rope.apply(&self.norm(blk, NormRole::K, &heads(&blk.attn[1], nkv)?, pass)?, offset, pass)?;
        let v = heads(&blk.attn[2], nkv)?;
        let (k, v) = match (cache, prefix) {
            (Some(c), _) => c.append(layer, &k, &v)?,
            (None, Some((pk, pv))) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            (None, None) => (k, v),
        };
        let total = k.dim(2)?;
        // Query heads sharing a KV head are stacked along the sequence axis: [b, nkv, rep*t, hd].
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let mask = CausalMask { rep, t, offset: total - t, window: cfg.layer_window(layer) };
        let out = crate::ops::attention(&q, &k, &v, cfg.attention_scale(), Some(&mask), pass == Pass::Train)?;
        let attn = out.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        Ok((x + self.norm(blk, NormRole::AttnOut, &proj(&blk.attn[3], &attn, pass)?, pass)?)?)
    }

    /// The block's second half: `x` plus its gated MLP's output.
    pub(super) fn feed_forward(&self, blk: &Block, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let h = self.norm(blk, NormRole::FfnIn, x, pass)?;
        let gate = proj(&blk.mlp[0], &h, pass)?;
        let up = proj(&blk.mlp[1], &h, pass)?;
        // Training fuses SiLU with the gating product (one node, a one-pass backward).
        let gated = match (self.cfg.activation(), pass) {
            (Activation::Silu, Pass::Train) => crate::ops::silu_mul(&gate, &up)?,
            (Activation::Silu, Pass::Infer) => (gate.silu()? * up)?,
            (Activation::GeluTanh, _) => (gate.gelu()? * up)?,
        };
        let down = proj(&blk.mlp[2], &gated, pass)?;
        Ok((x + self.norm(blk, NormRole::FfnOut, &down, pass)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::random::smollm2_135m_config;

    #[test]
    fn positions_past_the_table_rotate_as_if_tabulated() {
        let dev = Device::Cpu;
        let mut cfg = smollm2_135m_config();
        cfg.max_position_embeddings = 4;
        let short = RopeTables::new(&cfg, cfg.rope_theta, DType::F32, &dev).unwrap();
        assert_eq!(short.cos.dims(), [4, 32]);
        cfg.max_position_embeddings = 16;
        let long = RopeTables::new(&cfg, cfg.rope_theta, DType::F32, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 2, 5, 64), &dev).unwrap();
        for pass in [Pass::Infer, Pass::Train] {
            for offset in [0, 3, 9] {
                let (a, b) = (short.apply(&x, offset, pass).unwrap(), long.apply(&x, offset, pass).unwrap());
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(diff, 0.0, "{pass:?} at offset {offset}");
            }
        }
    }

    #[test]
    fn the_table_is_capped_whatever_the_context() {
        let mut cfg = smollm2_135m_config();
        cfg.max_position_embeddings = 1 << 24;
        cfg.head_dim = Some(1024);
        let t = RopeTables::new(&cfg, cfg.rope_theta, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.cos.dims(), [MAX_ROPE_TABLE / 512, 512]);
    }
}
