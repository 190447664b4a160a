//! One Llama decoder block: pre-norm GQA attention with RoPE, then a SiLU-gated MLP.
//!
//! The block forward lives on [`BlockContext`] (hyperparameters, RoPE tables, device) rather than
//! on the whole model, so a cheap clone of it can travel into a gradient-checkpointing backward
//! and recompute one block there. Attention never repeats K/V for grouped queries: the `rep`
//! query heads that share a KV head are stacked along the sequence axis, so one matmul serves
//! the whole group.

use super::config::LlamaConfig;
use super::model::Pass;
use crate::models::linear::Proj;
use crate::models::KvCache;
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Block {
    pub(super) input_layernorm: Tensor,
    pub(super) post_attention_layernorm: Tensor,
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
    pub(super) fn new(cfg: &LlamaConfig, dtype: DType, device: &Device) -> Result<Self> {
        let (theta, head_dim) = (cfg.rope_theta, cfg.head_dim());
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
        let mut out: Vec<Tensor> = [&self.input_layernorm, &self.post_attention_layernorm]
            .into_iter()
            .filter(|t| t.is_variable())
            .cloned()
            .collect();
        for p in self.attn.iter().chain(self.mlp.iter()) {
            out.extend(p.trainable_tensors());
        }
        out
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · w`, computed in at least f32.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, pass: Pass) -> Result<Tensor> {
    let dtype = x.dtype();
    let work = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let xw = x.to_dtype(work)?;
    let normed = match pass {
        Pass::Infer => candle_nn::ops::rms_norm(&xw.contiguous()?, &w.to_dtype(work)?, eps as f32)?,
        Pass::Train => crate::ops::rms_norm(&xw, &w.to_dtype(work)?, eps)?,
    };
    Ok(normed.to_dtype(dtype)?)
}

/// Additive causal mask for `rep` stacked query groups of `t` new tokens after `offset` cached.
fn causal_mask(rep: usize, t: usize, offset: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let total = offset + t;
    let mut m = Vec::with_capacity(rep * t * total);
    for _ in 0..rep {
        for i in 0..t {
            for j in 0..total {
                m.push(if j <= offset + i { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(m, (rep * t, total), device)?.to_dtype(dtype)?)
}

/// What a block forward needs besides the block's own weights.
#[derive(Debug, Clone)]
pub(super) struct BlockContext {
    pub(super) cfg: LlamaConfig,
    pub(super) rope: RopeTables,
    pub(super) device: Device,
}

fn proj(p: &Proj, x: &Tensor, pass: Pass) -> Result<Tensor> {
    match pass {
        Pass::Train => p.forward_train(x),
        Pass::Infer => p.forward_infer(x),
    }
}

impl BlockContext {
    /// Runs `blk` (layer `layer`) over `x [b, t, hidden]`, after `offset` earlier positions whose
    /// keys and values are in `cache` or, without a cache, are the `prefix` (prefix tuning:
    /// `[b, kv_heads, offset, head_dim]` each).
    #[allow(clippy::too_many_arguments)] // one per input of the block; a struct would only rename them
    pub(super) fn forward(
        &self,
        blk: &Block,
        layer: usize,
        x: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        prefix: Option<&(Tensor, Tensor)>,
        pass: Pass,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let rep = nh / nkv;

        let h = rms_norm(x, &blk.input_layernorm, cfg.rms_norm_eps, pass)?;
        let heads = |p: &Proj, n: usize| -> Result<Tensor> {
            Ok(proj(p, &h, pass)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = self.rope.apply(&heads(&blk.attn[0], nh)?, offset, pass)?;
        let k = self.rope.apply(&heads(&blk.attn[1], nkv)?, offset, pass)?;
        let v = heads(&blk.attn[2], nkv)?;
        let (k, v) = match (cache, prefix) {
            (Some(c), _) => c.append(layer, &k, &v)?,
            (None, Some((pk, pv))) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            (None, None) => (k, v),
        };
        let total = k.dim(2)?;
        // Query heads sharing a KV head are stacked along the sequence axis: [b, nkv, rep*t, hd].
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let raw = q.matmul(&k.t()?)?;
        let mask = if t > 1 { Some(causal_mask(rep, t, offset, raw.dtype(), &self.device)?) } else { None };
        let scale = 1.0 / (hd as f64).sqrt();
        let probs = match pass {
            Pass::Infer => {
                let scores = (raw * scale)?;
                let scores = match &mask {
                    Some(m) => scores.broadcast_add(m)?,
                    None => scores,
                };
                candle_nn::ops::softmax_last_dim(&scores)?
            }
            Pass::Train => crate::ops::scaled_masked_softmax(&raw, scale, mask.as_ref())?,
        };
        debug_assert_eq!(probs.dim(3)?, total);
        let attn = probs.matmul(&v)?.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        let x = (x + proj(&blk.attn[3], &attn, pass)?)?;

        let h = rms_norm(&x, &blk.post_attention_layernorm, cfg.rms_norm_eps, pass)?;
        let gate = proj(&blk.mlp[0], &h, pass)?.silu()?;
        let up = proj(&blk.mlp[1], &h, pass)?;
        let down = proj(&blk.mlp[2], &(gate * up)?, pass)?;
        Ok((x + down)?)
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
        let short = RopeTables::new(&cfg, DType::F32, &dev).unwrap();
        assert_eq!(short.cos.dims(), [4, 32]);
        cfg.max_position_embeddings = 16;
        let long = RopeTables::new(&cfg, DType::F32, &dev).unwrap();
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
        let t = RopeTables::new(&cfg, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.cos.dims(), [MAX_ROPE_TABLE / 512, 512]);
    }
}
