//! The BERT encoder: embeddings (word + position + token type, LayerNorm), then post-LN blocks of
//! multi-head self-attention over the unmasked positions and a GELU feed-forward layer.
//!
//! One set of weights, two paths, as for the Llama family: [`Pass::Train`] uses only operations
//! that have a backward (graft's LayerNorm and GELU nodes, softmax composed from element-wise ops
//! and reductions), [`Pass::Infer`] may use candle's fused forward-only kernels. Both compute the
//! same function (tested).

use super::config::BertConfig;
use super::dropout::Dropout;
use super::weights::BertWeights;
use crate::models::hparams::{Checks, Dim};
use crate::models::linear::{BaseWeight, Proj};
use crate::models::llama::Pass;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var, D};

/// Added to the attention scores of padding keys: large enough that `exp` underflows to exactly
/// 0 in every float dtype, finite in f32/f64 so that no `inf - inf` can arise.
const MASKED_SCORE: f64 = -1e9;

/// LayerNorm weights: `y = (x - mean) / sqrt(var + ε) · w + b` over the last axis.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    /// Normalises in at least f32 (f64 stays f64), returning the input dtype.
    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let dtype = x.dtype();
        let work = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let (xw, w, b) = (x.to_dtype(work)?, self.weight.to_dtype(work)?, self.bias.to_dtype(work)?);
        // candle's fused kernel is f32-only (and has no backward).
        let y = match pass {
            Pass::Infer if work == DType::F32 => {
                candle_nn::ops::layer_norm(&xw.contiguous()?, &w, &b, self.eps as f32)?
            }
            _ => crate::ops::layer_norm(&xw, &w, &b, self.eps)?,
        };
        Ok(y.to_dtype(dtype)?)
    }
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`. The training path is graft's node with the exact
/// derivative (candle's fused `gelu_erf` backward rounds 1/√(2π) to six digits).
pub(crate) fn gelu(x: &Tensor, pass: Pass) -> Result<Tensor> {
    Ok(match pass {
        Pass::Infer => x.gelu_erf()?,
        Pass::Train => crate::ops::gelu_erf(x)?,
    })
}

/// One encoder block (`encoder.layer.{i}`).
#[derive(Debug, Clone)]
pub struct BertLayer {
    /// `attention.self.{query,key,value}` and `attention.output.dense`.
    pub attn: [Proj; 4],
    attn_norm: LayerNorm,
    /// `intermediate.dense` and `output.dense`.
    pub ffn: [Proj; 2],
    ffn_norm: LayerNorm,
}

impl BertLayer {
    /// A copy of this block (block `index` of its encoder) whose every weight is a new variable,
    /// with the variables by checkpoint name. Training the copy leaves this block untouched.
    pub fn trainable_copy(&self, index: usize, dtype: DType) -> Result<(BertLayer, Vec<(String, Var)>)> {
        let mut copy = self.clone();
        let mut vars = Vec::new();
        copy.vars_where(index, dtype, &mut |name: String, t: &mut Tensor| -> Result<bool> {
            // A detached view is never a variable, so this always copies the storage.
            let v = Var::from_tensor(&t.detach())?;
            *t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(true)
        })?;
        Ok((copy, vars))
    }

    /// Every weight of this block (block `index`), by checkpoint name, dense in `dtype`.
    pub fn named_weights(&self, index: usize, dtype: DType) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        self.clone().vars_where(index, dtype, &mut |name: String, t: &mut Tensor| -> Result<bool> {
            out.push((name, t.clone()));
            Ok(false)
        })?;
        Ok(out)
    }

    /// This block (block `index`) with every weight taken from `weight(name)` instead, by
    /// checkpoint name; a weight whose shape differs from this block's is an error naming it.
    pub fn with_weights(
        &self,
        index: usize,
        dtype: DType,
        weight: &mut dyn FnMut(&str) -> Result<Tensor>,
    ) -> Result<BertLayer> {
        let mut copy = self.clone();
        copy.vars_where(index, dtype, &mut |name: String, t: &mut Tensor| -> Result<bool> {
            let w = weight(&name)?;
            if w.dims() != t.dims() {
                return Err(GraftError::Input(format!(
                    "`{name}` has shape {:?}, the block's is {:?}",
                    w.dims(),
                    t.dims()
                )));
            }
            *t = w.to_dtype(dtype)?;
            Ok(true)
        })?;
        Ok(copy)
    }

    /// Offers every weight of the block, by checkpoint name, to `to_var`, which replaces the
    /// ones it makes variables (and says so by returning `true`).
    fn vars_where(
        &mut self,
        i: usize,
        dtype: DType,
        to_var: &mut dyn FnMut(String, &mut Tensor) -> Result<bool>,
    ) -> Result<()> {
        for p in self.attn.iter_mut().chain(self.ffn.iter_mut()) {
            let (mut w, mut b) = (p.dense_weight(dtype)?, p.bias().cloned());
            let mut changed = to_var(format!("{}.weight", p.name()), &mut w)?;
            if let Some(b) = &mut b {
                changed |= to_var(format!("{}.bias", p.name()), b)?;
            }
            if changed {
                if p.has_adapters() {
                    return Err(GraftError::Input(format!(
                        "{} already has adapters: choose the trainable weights before attaching adapters",
                        p.name()
                    )));
                }
                *p = Proj::new(p.name().to_string(), BaseWeight::Dense(w), b)?;
            }
        }
        for (norm, prefix) in [(&mut self.attn_norm, "attention.output"), (&mut self.ffn_norm, "output")] {
            to_var(format!("encoder.layer.{i}.{prefix}.LayerNorm.weight"), &mut norm.weight)?;
            to_var(format!("encoder.layer.{i}.{prefix}.LayerNorm.bias"), &mut norm.bias)?;
        }
        Ok(())
    }
}

/// Token ids, segment ids and padding mask of a right-padded batch, all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Word-piece ids (u32).
    pub ids: Tensor,
    /// Segment ids (u32; 0 for single sentences).
    pub type_ids: Tensor,
    /// 1 at real tokens, 0 at padding, in the model dtype.
    pub mask: Tensor,
}

impl BertInput {
    /// Right-pads `seqs` to the longest with `pad_id`: segment ids 0, mask 1 on real tokens.
    pub fn pad(seqs: &[Vec<u32>], pad_id: u32, dtype: DType, device: &Device) -> Result<Self> {
        let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Err(GraftError::Input("cannot run the encoder on an empty batch or empty sequences".into()));
        }
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut mask = Vec::with_capacity(seqs.len() * width);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad_id, width - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, width - s.len()));
        }
        let shape = (seqs.len(), width);
        Ok(Self {
            ids: Tensor::from_vec(ids, shape, device)?,
            type_ids: Tensor::zeros(shape, DType::U32, device)?,
            mask: Tensor::from_vec(mask, shape, device)?.to_dtype(dtype)?,
        })
    }
}

/// A BERT-family encoder (`BertModel` without the pooler head).
#[derive(Debug, Clone)]
pub struct Bert {
    cfg: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    device: Device,
    dtype: DType,
}

impl Bert {
    /// Builds the encoder from `weights`, checking every tensor's shape against `cfg`.
    pub fn load(cfg: BertConfig, weights: &BertWeights, device: &Device, dtype: DType) -> Result<Self> {
        cfg.validate().map_err(|e| GraftError::model(weights.origin(), e.to_string()))?;
        let same_name = |field: &str| field.to_string();
        let checks = Checks::new(&same_name);
        let fail = |reason: String| GraftError::model(weights.origin(), reason);
        // The shape is checked before the tensor is read, naming the config.json keys behind it.
        let get = |name: &str, dims: &[Dim<'_>]| -> Result<Tensor> {
            checks.shape(&weights.stored_name(name), weights.shape(name), dims).map_err(fail)?;
            weights.get(name, &dims.iter().map(Dim::size).collect::<Vec<_>>(), dtype, device)
        };
        let (hidden, ffn) = ([("hidden_size", cfg.hidden_size)], [("intermediate_size", cfg.intermediate_size)]);
        let (h, ff) = (Dim(&hidden), Dim(&ffn));
        let norm = |prefix: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: get(&format!("{prefix}.LayerNorm.weight"), &[h])?,
                bias: get(&format!("{prefix}.LayerNorm.bias"), &[h])?,
                eps: cfg.layer_norm_eps,
            })
        };
        let proj = |name: String, out: Dim<'_>, inp: Dim<'_>| -> Result<Proj> {
            let w = get(&format!("{name}.weight"), &[out, inp])?;
            let b = get(&format!("{name}.bias"), &[out])?;
            Proj::new(name, BaseWeight::Dense(w), Some(b))
        };
        let n = cfg.num_hidden_layers;
        let block_probe = |i: usize| format!("encoder.layer.{i}.attention.self.query.weight");
        if weights.shape(&block_probe(n - 1)).is_none() {
            let reason = format!("found {n}, but the checkpoint has no layer {} (no `{}`)", n - 1, block_probe(n - 1));
            return Err(fail(checks.fail("num_hidden_layers", reason).to_string()));
        }
        if weights.shape(&block_probe(n)).is_some() {
            let reason = format!("found {n}, but the checkpoint has more layers (`{}` exists)", block_probe(n));
            return Err(fail(checks.fail("num_hidden_layers", reason).to_string()));
        }
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                attn: [
                    proj(format!("{p}.attention.self.query"), h, h)?,
                    proj(format!("{p}.attention.self.key"), h, h)?,
                    proj(format!("{p}.attention.self.value"), h, h)?,
                    proj(format!("{p}.attention.output.dense"), h, h)?,
                ],
                attn_norm: norm(&format!("{p}.attention.output"))?,
                ffn: [proj(format!("{p}.intermediate.dense"), ff, h)?, proj(format!("{p}.output.dense"), h, ff)?],
                ffn_norm: norm(&format!("{p}.output"))?,
            });
        }
        let rows = |field: &'static str, n: usize| [(field, n)];
        let (vocab, positions, types) = (
            rows("vocab_size", cfg.vocab_size),
            rows("max_position_embeddings", cfg.max_position_embeddings),
            rows("type_vocab_size", cfg.type_vocab_size),
        );
        Ok(Self {
            word_embeddings: get("embeddings.word_embeddings.weight", &[Dim(&vocab), h])?,
            position_embeddings: get("embeddings.position_embeddings.weight", &[Dim(&positions), h])?,
            token_type_embeddings: get("embeddings.token_type_embeddings.weight", &[Dim(&types), h])?,
            embeddings_norm: norm("embeddings")?,
            layers,
            cfg,
            device: device.clone(),
            dtype,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Precision of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The word-embedding table `[vocab, hidden]`: the input lookup, and the decoder of a tied
    /// masked-LM head. After [`Bert::make_trainable`] selected it, this is the variable's own
    /// tensor (the same storage the optimizer updates).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word_embeddings
    }

    /// Every weight by its `BertModel` checkpoint name (`encoder.layer.0.attention.self.query.weight`),
    /// projections with any adapters folded in: what an exported folder holds.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![
            ("embeddings.word_embeddings.weight".to_string(), self.word_embeddings.clone()),
            ("embeddings.position_embeddings.weight".into(), self.position_embeddings.clone()),
            ("embeddings.token_type_embeddings.weight".into(), self.token_type_embeddings.clone()),
            ("embeddings.LayerNorm.weight".into(), self.embeddings_norm.weight.clone()),
            ("embeddings.LayerNorm.bias".into(), self.embeddings_norm.bias.clone()),
        ];
        for (i, layer) in self.layers.iter().enumerate() {
            for p in layer.attn.iter().chain(layer.ffn.iter()) {
                out.push((format!("{}.weight", p.name()), p.effective_weight(self.dtype)?));
                if let Some(b) = p.bias() {
                    out.push((format!("{}.bias", p.name()), b.clone()));
                }
            }
            for (norm, prefix) in [(&layer.attn_norm, "attention.output"), (&layer.ffn_norm, "output")] {
                out.push((format!("encoder.layer.{i}.{prefix}.LayerNorm.weight"), norm.weight.clone()));
                out.push((format!("encoder.layer.{i}.{prefix}.LayerNorm.bias"), norm.bias.clone()));
            }
        }
        Ok(out)
    }

    /// The encoder blocks (their projections are where adapters attach).
    pub fn layers(&self) -> &[BertLayer] {
        &self.layers
    }

    /// Mutable access to every adaptable projection, named as in the checkpoint
    /// (`encoder.layer.0.attention.self.query`).
    pub fn projections_mut(&mut self) -> Vec<&mut Proj> {
        self.layers.iter_mut().flat_map(|l| l.attn.iter_mut().chain(l.ffn.iter_mut())).collect()
    }

    /// Makes the weights whose checkpoint names (`encoder.layer.5.output.dense.weight`) satisfy
    /// `select` trainable and returns them as variables, by name; the others stay frozen.
    pub fn make_trainable(&mut self, select: impl Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        let mut to_var = |name: String, t: &mut Tensor| -> Result<bool> {
            if !select(&name) {
                return Ok(false);
            }
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(true)
        };
        to_var("embeddings.word_embeddings.weight".into(), &mut self.word_embeddings)?;
        to_var("embeddings.position_embeddings.weight".into(), &mut self.position_embeddings)?;
        to_var("embeddings.token_type_embeddings.weight".into(), &mut self.token_type_embeddings)?;
        to_var("embeddings.LayerNorm.weight".into(), &mut self.embeddings_norm.weight)?;
        to_var("embeddings.LayerNorm.bias".into(), &mut self.embeddings_norm.bias)?;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.vars_where(i, self.dtype, &mut to_var)?;
        }
        Ok(vars)
    }

    /// Unfreezes the top `k` encoder blocks (feature extraction with the last layers tuned):
    /// every weight of `encoder.layer.{n-k}` .. `encoder.layer.{n-1}` becomes a variable.
    pub fn unfreeze_top_layers(&mut self, k: usize) -> Result<Vec<(String, Var)>> {
        let n = self.layers.len();
        if k > n {
            return Err(GraftError::Input(format!("cannot unfreeze the top {k} layers of a {n}-layer encoder")));
        }
        let first = n - k;
        self.make_trainable(|name| {
            name.strip_prefix("encoder.layer.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= first)
        })
    }

    /// Runs the encoder; returns the last hidden states `[batch, seq, hidden]` (HF's
    /// `last_hidden_state`). Padding keys are masked out of every attention; the rows at padding
    /// positions are computed but meaningless.
    pub fn forward(&self, input: &BertInput, pass: Pass) -> Result<Tensor> {
        self.forward_dropout(input, pass, None)
    }

    /// [`Bert::forward`] with BERT's training dropout where `dropout` is given: on the embedding
    /// output, the attention probabilities, and each block's attention and feed-forward outputs
    /// before their residual sums (`hidden_dropout_prob` / `attention_probs_dropout_prob`).
    pub fn forward_dropout(&self, input: &BertInput, pass: Pass, dropout: Option<&Dropout>) -> Result<Tensor> {
        self.forward_layers(input, self.layers.len(), pass, dropout)
    }

    /// The embeddings, then the first `n` blocks.
    fn forward_layers(&self, input: &BertInput, n: usize, pass: Pass, dropout: Option<&Dropout>) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            return Err(GraftError::Input(format!(
                "sequence of {t} tokens is longer than the encoder's {} positions; truncate the input",
                self.cfg.max_position_embeddings
            )));
        }
        let h = self.cfg.hidden_size;
        let words = self.word_embeddings.index_select(&input.ids.flatten_all()?, 0)?.reshape((b, t, h))?;
        let types = self.token_type_embeddings.index_select(&input.type_ids.flatten_all()?, 0)?.reshape((b, t, h))?;
        let positions = self.position_embeddings.narrow(0, 0, t)?.unsqueeze(0)?;
        let x = (words + types)?.broadcast_add(&positions)?;
        let mut x = apply_dropout(dropout, self.embeddings_norm.forward(&x, pass)?)?;
        let bias = self.attention_bias(input)?;
        for layer in &self.layers[..n] {
            x = self.layer_forward(layer, &x, &bias, pass, dropout)?;
        }
        Ok(x)
    }

    /// The additive attention mask of `input`, `[b, 1, 1, t]`: 0 at real keys, a large negative
    /// score at padding (built in f32, where both are exact).
    pub fn attention_bias(&self, input: &BertInput) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        Ok(input
            .mask
            .to_dtype(DType::F32)?
            .affine(-MASKED_SCORE, MASKED_SCORE)?
            .to_dtype(self.dtype)?
            .reshape((b, 1, 1, t))?)
    }

    /// The hidden states after the embeddings and the first `n` blocks, `[batch, seq, hidden]`
    /// (for models that put their own blocks on top of a shared lower encoder).
    pub fn hidden_after(&self, input: &BertInput, n: usize, pass: Pass) -> Result<Tensor> {
        if n > self.layers.len() {
            return Err(GraftError::Input(format!("the encoder has {} blocks, not {n}", self.layers.len())));
        }
        self.forward_layers(input, n, pass, None)
    }

    /// One block (this encoder's or a copy of one) on `x` `[batch, seq, hidden]` with the
    /// attention mask `bias` from [`Bert::attention_bias`], without dropout.
    pub fn run_layer(&self, layer: &BertLayer, x: &Tensor, bias: &Tensor, pass: Pass) -> Result<Tensor> {
        self.layer_forward(layer, x, bias, pass, None)
    }

    fn proj(p: &Proj, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Train => p.forward_train(x),
            Pass::Infer => p.forward_infer(x),
        }
    }

    /// One block on `x` `[batch, seq, hidden]`. Projections run on the flattened
    /// `[batch·seq, hidden]` rows: one large matrix product instead of one per sequence.
    fn layer_forward(
        &self,
        layer: &BertLayer,
        x: &Tensor,
        bias: &Tensor,
        pass: Pass,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let (nh, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let rows = x.reshape((b * t, h))?;
        let heads = |p: &Proj| -> Result<Tensor> {
            Ok(Self::proj(p, &rows, pass)?.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = (heads(&layer.attn[0])?, heads(&layer.attn[1])?, heads(&layer.attn[2])?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(bias)?;
        let probs = match pass {
            Pass::Infer => candle_nn::ops::softmax_last_dim(&scores)?,
            Pass::Train => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let probs = apply_dropout(dropout, probs)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * t, h))?;
        let attn = apply_dropout(dropout, Self::proj(&layer.attn[3], &ctx, pass)?)?;
        let rows = layer.attn_norm.forward(&(attn + rows)?, pass)?;
        let inner = gelu(&Self::proj(&layer.ffn[0], &rows, pass)?, pass)?;
        let out = apply_dropout(dropout, Self::proj(&layer.ffn[1], &inner, pass)?)?;
        Ok(layer.ffn_norm.forward(&(out + rows)?, pass)?.reshape((b, t, h))?)
    }
}

/// `x` through `dropout` where there is one.
fn apply_dropout(dropout: Option<&Dropout>, x: Tensor) -> Result<Tensor> {
    match dropout {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}
