//! The pieces Whisper's encoder and decoder blocks share: pre-norm multi-head attention (self or
//! cross), the GELU feed-forward block, and the blocks themselves.
//!
//! As in CTranslate2's `TransformerEncoderLayer` / `TransformerDecoderLayer` with `pre_norm`:
//! each sub-block is `x + f(LayerNorm(x))`; attention scores are `q kᵀ / √head_dim`; the
//! feed-forward block is `fc2(GELU(fc1(x)))` with the exact (erf) GELU; LayerNorm ε is 1e-5.

use crate::models::bert::model::{gelu, LayerNorm};
use crate::models::linear::Proj;
use crate::models::llama::Pass;
use crate::ops::CausalMask;
use crate::Result;
use candle_core::Tensor;

/// `p(x)` through the kernels of `pass`.
pub(super) fn proj(p: &Proj, x: &Tensor, pass: Pass) -> Result<Tensor> {
    match pass {
        Pass::Train => p.forward_train(x),
        Pass::Infer => p.forward_infer(x),
    }
}

/// Multi-head attention projections: `q_proj`, `k_proj`, `v_proj`, `out_proj` (Hugging Face
/// names; CTranslate2 fuses q, k, v for self-attention and k, v for cross-attention, split at
/// load time).
#[derive(Debug, Clone)]
pub struct Attention {
    /// `[q_proj, k_proj, v_proj, out_proj]`.
    pub proj: [Proj; 4],
    /// Number of heads.
    pub(super) heads: usize,
}

impl Attention {
    /// `x [b, t, d]` projected by projection `i` (0 q, 1 k, 2 v) and split into heads:
    /// `[b, heads, t, head_dim]`.
    pub(super) fn heads_of(&self, i: usize, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = proj(&self.proj[i], x, pass)?;
        Ok(y.reshape((b, t, self.heads, d / self.heads))?.transpose(1, 2)?.contiguous()?)
    }

    /// Keys and values of `x [b, s, d]`, `[b, heads, s, head_dim]` each.
    pub(super) fn keys_values(&self, x: &Tensor, pass: Pass) -> Result<(Tensor, Tensor)> {
        Ok((self.heads_of(1, x, pass)?, self.heads_of(2, x, pass)?))
    }

    /// Attention of the queries of `x [b, t, d]` over `k`, `v` (`[b, heads, s, head_dim]`),
    /// causal under `mask` where given, then `out_proj`: `[b, t, d]`.
    pub(super) fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&CausalMask>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let q = self.heads_of(0, x, pass)?;
        let scale = 1.0 / ((d / self.heads) as f64).sqrt();
        let out = crate::ops::attention(&q, k, v, scale, mask, pass == Pass::Train)?;
        let out = out.transpose(1, 2)?.reshape((b, t, d))?;
        proj(&self.proj[3], &out, pass)
    }
}

/// The feed-forward block: `fc2(GELU(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    /// `[fc1, fc2]`.
    pub proj: [Proj; 2],
}

impl FeedForward {
    /// `x [b, t, d] → [b, t, d]`.
    pub(super) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let h = gelu(&proj(&self.proj[0], x, pass)?, pass)?;
        proj(&self.proj[1], &h, pass)
    }
}

/// One encoder block: self-attention over all frames, then the feed-forward block.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub(super) attn_norm: LayerNorm,
    /// Self-attention (`encoder.layers.{i}.self_attn`).
    pub attn: Attention,
    pub(super) ffn_norm: LayerNorm,
    /// Feed-forward block (`encoder.layers.{i}.fc1`, `fc2`).
    pub ffn: FeedForward,
}

impl EncoderLayer {
    /// `x [b, frames, d] → [b, frames, d]`.
    pub(super) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let h = self.attn_norm.forward(x, pass)?;
        let (k, v) = self.attn.keys_values(&h, pass)?;
        let x = (x + self.attn.attend(&h, &k, &v, None, pass)?)?;
        Ok((&x + self.ffn.forward(&self.ffn_norm.forward(&x, pass)?, pass)?)?)
    }

    /// Every projection of the block.
    pub(super) fn projections_mut(&mut self) -> impl Iterator<Item = &mut Proj> {
        self.attn.proj.iter_mut().chain(self.ffn.proj.iter_mut())
    }
}

/// One decoder block: causal self-attention, cross-attention over the encoder states, then the
/// feed-forward block.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(super) self_norm: LayerNorm,
    /// Causal self-attention (`decoder.layers.{i}.self_attn`).
    pub self_attn: Attention,
    pub(super) cross_norm: LayerNorm,
    /// Cross-attention over the audio (`decoder.layers.{i}.encoder_attn`).
    pub cross_attn: Attention,
    pub(super) ffn_norm: LayerNorm,
    /// Feed-forward block (`decoder.layers.{i}.fc1`, `fc2`).
    pub ffn: FeedForward,
}

/// Keys and values a decoder block attends to besides its new tokens' own.
pub(super) struct DecoderMemory<'a> {
    /// Self-attention keys and values of the earlier positions, `[b, heads, offset, head_dim]`
    /// each (`None` at the first step); the new ones are appended to it.
    pub(super) past: Option<(Tensor, Tensor)>,
    /// Cross-attention keys and values of the encoder states, `[b, heads, frames, head_dim]`.
    pub(super) cross: &'a (Tensor, Tensor),
    /// The causal mask of the new tokens after the earlier ones.
    pub(super) mask: Option<&'a CausalMask>,
}

impl DecoderLayer {
    /// `x [b, t, d]` → (`[b, t, d]`, the self-attention keys and values of all positions so far).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        memory: DecoderMemory<'_>,
        pass: Pass,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let h = self.self_norm.forward(x, pass)?;
        let (k, v) = self.self_attn.keys_values(&h, pass)?;
        let (k, v) = match memory.past {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let x = (x + self.self_attn.attend(&h, &k, &v, memory.mask, pass)?)?;
        let h = self.cross_norm.forward(&x, pass)?;
        let (ck, cv) = memory.cross;
        let x = (&x + self.cross_attn.attend(&h, ck, cv, None, pass)?)?;
        let x = (&x + self.ffn.forward(&self.ffn_norm.forward(&x, pass)?, pass)?)?;
        Ok((x, (k, v)))
    }

    /// Every projection of the block.
    pub(super) fn projections_mut(&mut self) -> impl Iterator<Item = &mut Proj> {
        self.self_attn.proj.iter_mut().chain(self.cross_attn.proj.iter_mut()).chain(self.ffn.proj.iter_mut())
    }
}
