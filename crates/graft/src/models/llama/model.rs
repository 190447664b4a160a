//! The Llama decoder: embeddings, `n` pre-norm blocks (GQA attention with RoPE, gated MLP),
//! final RMSNorm and LM head (tied to the embeddings when the checkpoint says so). Gemma 3 is the
//! same decoder with the differences its [`super::config::Family`] names (embeddings scaled by
//! `√hidden`, extra norms, sliding-window layers).
//!
//! One set of weights, two paths: [`Pass::Train`] uses graft's training ops (`crate::ops`:
//! RMSNorm, RoPE, masked softmax and frozen projections with hand-written backward passes),
//! [`Pass::Infer`] uses candle's fused forward-only kernels and a KV cache. Attention never repeats K/V for grouped queries: the `rep` query heads that share a KV
//! head are stacked along the sequence axis, so one matmul serves the whole group.

use super::block::{rms_norm, Block, BlockContext, Earlier};
use super::checkpointed::{segment_len, CheckpointedRun};
use super::config::{Family, LlamaConfig, GEMMA3_ARCH};
use super::embedding::EmbeddingTable;
use super::expand::BlockExpansion;
use super::student::StudentLineage;
use super::virtual_tokens::VirtualTokens;
use super::weights::{WeightFormat, WeightSource};
use crate::models::linear::{dense_product, dequantizes_for, BaseWeight, Proj};
use crate::models::{KvCache, Model, ModelInfo};
use crate::ops::{self, CheckpointMode, FrozenWeight, GradSink};
use crate::{GraftError, Result};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor, Var, D};
use std::sync::Arc;

/// Which kernels a forward pass may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Differentiable ops (training, gradient checks).
    Train,
    /// Fused forward-only kernels (generation, evaluation).
    Infer,
}

/// How to materialise a model: where, in which precision, and how to hold projection weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device the weights and activations live on.
    pub device: Device,
    /// Activation and dense-weight precision.
    pub dtype: DType,
    /// Dense (exact, trainable) or quantized (lean inference / QLoRA base) projections.
    pub format: WeightFormat,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32, format: WeightFormat::Dense }
    }
}

/// A Llama-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    info: ModelInfo,
    embed_tokens: EmbeddingTable,
    layers: Vec<Block>,
    norm: Tensor,
    lm_head: Option<Proj>,
    /// The tied head as the embedding table's GGUF blocks, for inference when the model was
    /// loaded with quantized weights (a quarter of the bytes per token of a dense table; the
    /// table itself then stays in the same blocks). Dropped when the table becomes trainable.
    quantized_head: Option<Arc<QMatMul>>,
    ctx: BlockContext,
    dtype: DType,
    /// Where checkpointed blocks leave their parameters' gradients (when enabled).
    checkpoint: Option<Arc<GradSink>>,
    /// What checkpointing keeps (with `checkpoint`).
    checkpoint_mode: CheckpointMode,
    /// Soft prompt or prefix prepended to every sequence (prompt / prefix tuning).
    virtual_tokens: Option<VirtualTokens>,
    /// Which blocks of which model this one was built from, when it is a smaller student.
    lineage: Option<StudentLineage>,
    /// Which blocks are new, when the model was grown by block expansion.
    expansion: Option<BlockExpansion>,
}

impl Llama {
    /// Builds the model from `source`. The config is validated and every tensor's shape checked
    /// against it ([`LlamaConfig::validate_as`], [`LlamaConfig::check_tensors`]) before any
    /// tensor is read.
    pub fn load(cfg: LlamaConfig, source: &dyn WeightSource, opts: &LoadOptions) -> Result<Self> {
        cfg.validate_as(&source.key_names()).map_err(|e| GraftError::model(source.origin(), e.to_string()))?;
        cfg.check_tensors(source)?;
        let (dev, dtype) = (&opts.device, opts.dtype);
        let proj = |hf: &str| -> Result<Proj> {
            Proj::new(hf, source.projection(&format!("model.{hf}.weight"), opts.format, dtype, dev)?, None)
        };
        // Quantized loads keep the table in its blocks when the file has it so (and share them
        // with the tied head below); dense loads and dense files read it dense.
        let embed_tokens = match opts.format {
            WeightFormat::Quantized => match source.projection("model.embed_tokens.weight", opts.format, dtype, dev)? {
                BaseWeight::Quantized(q) => EmbeddingTable::Quantized(q),
                BaseWeight::Dense(w) => EmbeddingTable::Dense(w),
            },
            WeightFormat::Dense => EmbeddingTable::Dense(source.dense("model.embed_tokens.weight", dtype, dev)?),
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = |m: &str| format!("layers.{i}.{m}");
            let norm = |m: &str| source.dense(&format!("model.layers.{i}.{m}.weight"), dtype, dev);
            layers.push(Block {
                norms: cfg.norm_modules().iter().map(|m| norm(m)).collect::<Result<_>>()?,
                attn: [
                    proj(&p("self_attn.q_proj"))?,
                    proj(&p("self_attn.k_proj"))?,
                    proj(&p("self_attn.v_proj"))?,
                    proj(&p("self_attn.o_proj"))?,
                ],
                mlp: [proj(&p("mlp.gate_proj"))?, proj(&p("mlp.up_proj"))?, proj(&p("mlp.down_proj"))?],
            });
        }
        let norm = source.dense("model.norm.weight", dtype, dev)?;
        let lm_head = if cfg.has_lm_head(source) {
            Some(Proj::new("lm_head", source.projection("lm_head.weight", opts.format, dtype, dev)?, None)?)
        } else {
            None
        };
        let quantized_head = match (&lm_head, &embed_tokens) {
            (None, EmbeddingTable::Quantized(q)) => Some(Arc::new(QMatMul::from_arc(q.clone())?)),
            _ => None,
        };
        let info = ModelInfo {
            architecture: match cfg.family {
                Family::Llama => "llama".into(),
                Family::Gemma3(_) => GEMMA3_ARCH.into(),
            },
            vocab_size: cfg.vocab_size,
            max_position_embeddings: cfg.max_position_embeddings,
            n_layers: cfg.num_hidden_layers,
        };
        let ctx = BlockContext::new(cfg, dtype, dev)?;
        Ok(Self {
            info,
            embed_tokens,
            layers,
            norm,
            lm_head,
            quantized_head,
            ctx,
            dtype,
            checkpoint: None,
            checkpoint_mode: CheckpointMode::Blocks,
            virtual_tokens: None,
            lineage: None,
            expansion: None,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.ctx.cfg
    }

    /// Which blocks of which model this one was built from, when it is a smaller student
    /// (`model.keep_layers`); exports record it.
    pub fn lineage(&self) -> Option<&StudentLineage> {
        self.lineage.as_ref()
    }

    /// Records the model's lineage (set by the loader).
    pub fn with_lineage(mut self, lineage: Option<StudentLineage>) -> Self {
        self.lineage = lineage;
        self
    }

    /// Which blocks are new, when the model was grown by block expansion
    /// (`model.expand_blocks`).
    pub fn expansion(&self) -> Option<&BlockExpansion> {
        self.expansion.as_ref()
    }

    /// Records the blocks block expansion added (set by the loader).
    pub fn with_expansion(mut self, expansion: Option<BlockExpansion>) -> Self {
        self.expansion = expansion;
        self
    }

    /// The decoder blocks (their projections are where adapters attach).
    pub fn layers(&self) -> &[Block] {
        &self.layers
    }

    /// Mutable access to every adaptable projection, with its name.
    pub fn projections_mut(&mut self) -> Vec<&mut Proj> {
        let mut out: Vec<&mut Proj> = Vec::new();
        for b in &mut self.layers {
            out.extend(b.attn.iter_mut());
            out.extend(b.mlp.iter_mut());
        }
        if let Some(head) = &mut self.lm_head {
            out.push(head);
        }
        out
    }

    /// Makes the weights whose Hugging Face names satisfy `select` trainable (full fine-tuning,
    /// or freezing everything else) and returns them as variables, by name. Quantized
    /// projections are dequantized first.
    pub fn make_trainable(&mut self, select: impl Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        let dtype = self.dtype;
        let mut vars = Vec::new();
        if select("model.embed_tokens.weight") {
            vars.push(("model.embed_tokens.weight".into(), self.embed_tokens.make_var(dtype)?));
            self.quantized_head = None;
        }
        let mut to_var = |name: String, t: &mut Tensor| -> Result<bool> {
            if !select(&name) {
                return Ok(false);
            }
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(true)
        };
        let norm_modules = self.ctx.cfg.norm_modules();
        for (i, b) in self.layers.iter_mut().enumerate() {
            let norm_name = |k: usize| format!("model.layers.{i}.{}.weight", norm_modules[k]);
            to_var(norm_name(0), &mut b.norms[0])?;
            for p in b.attn.iter_mut().chain(b.mlp.iter_mut()) {
                let mut w = p.dense_weight(dtype)?;
                if to_var(format!("model.{}.weight", p.name()), &mut w)? {
                    p.set_base(BaseWeight::Dense(w))?;
                }
            }
            for (k, t) in b.norms.iter_mut().enumerate().skip(1) {
                to_var(norm_name(k), t)?;
            }
        }
        to_var("model.norm.weight".into(), &mut self.norm)?;
        if let Some(head) = &mut self.lm_head {
            let mut w = head.dense_weight(dtype)?;
            if to_var("lm_head.weight".into(), &mut w)? {
                head.set_base(BaseWeight::Dense(w))?;
            }
        }
        Ok(vars)
    }

    /// Every weight under its Hugging Face name, dense in the model dtype (for export).
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.dense(self.dtype)?)];
        let norm_modules = self.ctx.cfg.norm_modules();
        for (i, b) in self.layers.iter().enumerate() {
            for (m, t) in norm_modules.iter().zip(&b.norms) {
                out.push((format!("model.layers.{i}.{m}.weight"), t.clone()));
            }
            for p in b.attn.iter().chain(b.mlp.iter()) {
                out.push((format!("model.{}.weight", p.name()), p.dense_weight(self.dtype)?));
            }
        }
        out.push(("model.norm.weight".into(), self.norm.clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.dense_weight(self.dtype)?));
        }
        Ok(out)
    }

    /// Runs the decoder over `ids` `[b, t]`; returns final hidden states `[b, t, hidden]`.
    ///
    /// With virtual tokens set ([`Llama::set_virtual_tokens`]) and nothing cached yet, they take
    /// positions `0..n` and the real tokens follow; only the real tokens' states are returned.
    /// With a cache, a prefix goes into it first (so later calls see it as earlier tokens).
    pub fn hidden_states(&self, ids: &Tensor, cache: Option<&mut KvCache>, pass: Pass) -> Result<Tensor> {
        Ok(self.hidden_states_tapped(ids, cache, pass, &[])?.0)
    }

    /// [`Llama::hidden_states`], also returning the residual stream after each of the block
    /// counts in `taps` (`[b, t, hidden]` each, in the order given; `L` is Hugging Face's
    /// `hidden_states[L]`, `1 ≤ L ≤` the number of blocks), with the same graph: hidden-state
    /// distillation trains on them.
    pub fn hidden_states_tapped(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        pass: Pass,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if let Some(&bad) = taps.iter().find(|&&l| l == 0 || l > self.layers.len()) {
            return Err(GraftError::Input(format!(
                "hidden state after {bad} blocks asked for, but the model has {} decoder blocks (1..={})",
                self.layers.len(),
                self.layers.len()
            )));
        }
        let mut tapped: Vec<Option<Tensor>> = vec![None; taps.len()];
        let (b, t) = ids.dims2()?;
        let cfg = &self.ctx.cfg;
        let mut offset = cache.as_ref().map_or(0, |c| c.len());
        let virt = self.virtual_tokens.as_ref().filter(|_| offset == 0);
        let n_virtual = virt.map_or(0, |v| v.len());
        if offset + n_virtual + t > cfg.max_position_embeddings {
            return Err(GraftError::Input(format!(
                "sequence of {} tokens (with {n_virtual} virtual tokens) is longer than the model's context of {} tokens",
                offset + n_virtual + t,
                cfg.max_position_embeddings
            )));
        }
        let mut x = self.embed(ids)?;
        // Rows of virtual input embeddings in front of `x` (soft prompt).
        let mut lead = 0;
        let mut prefix_in_blocks = false;
        match virt {
            Some(VirtualTokens::Prompt(p)) => {
                let p = p.to_dtype(x.dtype())?.unsqueeze(0)?.broadcast_as((b, n_virtual, cfg.hidden_size))?;
                x = Tensor::cat(&[&p.contiguous()?, &x], 1)?;
                lead = n_virtual;
            }
            Some(prefix @ VirtualTokens::Prefix(_)) => match cache.as_deref_mut() {
                Some(c) => {
                    for i in 0..self.layers.len() {
                        if let Some((k, v)) = prefix.prefix_kv(i, b, cfg, self.dtype)? {
                            c.append(i, &k, &v)?;
                        }
                    }
                    c.advance(n_virtual);
                    offset = n_virtual;
                }
                None => {
                    offset = n_virtual;
                    prefix_in_blocks = true;
                }
            },
            None => {}
        }
        let prefix = if prefix_in_blocks { virt.cloned() } else { None };
        let record = |tapped: &mut [Option<Tensor>], x: &Tensor, after: usize| -> Result<()> {
            for (slot, _) in tapped.iter_mut().zip(taps).filter(|(_, &l)| l == after) {
                *slot = Some(if lead > 0 { x.narrow(1, lead, t)? } else { x.clone() });
            }
            Ok(())
        };
        match (&self.checkpoint, pass, cache.is_none()) {
            (Some(sink), Pass::Train, true) => {
                let n = self.layers.len();
                // Taps read the residual stream between blocks: segments of one block keep it.
                let seg = if taps.is_empty() { segment_len(n, self.checkpoint_mode) } else { 1 };
                let run = CheckpointedRun { ctx: &self.ctx, offset, prefix, sink, mode: self.checkpoint_mode };
                for start in (0..n).step_by(seg) {
                    let end = (start + seg).min(n);
                    x = run.segment(&self.layers[start..end], start, &x)?;
                    record(&mut tapped, &x, end)?;
                }
            }
            _ => {
                for (i, block) in self.layers.iter().enumerate() {
                    let kv = match &prefix {
                        Some(p) => p.prefix_kv(i, b, cfg, self.dtype)?,
                        None => None,
                    };
                    let earlier = Earlier { offset, cache: cache.as_deref_mut(), prefix: kv.as_ref() };
                    x = self.ctx.forward(block, i, &x, earlier, pass)?;
                    record(&mut tapped, &x, i + 1)?;
                }
            }
        }
        if let Some(c) = cache {
            c.advance(lead + t);
        }
        let x = if lead > 0 { x.narrow(1, lead, t)? } else { x };
        Ok((rms_norm(&x, &self.norm, cfg.rms_norm_eps, pass)?, tapped.into_iter().flatten().collect()))
    }

    /// The token embeddings of `ids [b, t]` run through the first `n_blocks` decoder blocks at
    /// positions `0..t` (no cache, no virtual tokens): the residual stream `[b, t, hidden]`
    /// before the final norm, Hugging Face's `hidden_states[n_blocks]` for `n_blocks` below the
    /// number of blocks. Feature extraction uses it to stop early or to compute, once, the
    /// frozen input of blocks that train.
    pub fn hidden_after_blocks(&self, ids: &Tensor, n_blocks: usize, pass: Pass) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        self.check_plain_run(t, n_blocks)?;
        let mut x = self.embed(ids)?;
        for (i, block) in self.layers.iter().enumerate().take(n_blocks) {
            x = self.ctx.forward(block, i, &x, Earlier::none(), pass)?;
        }
        Ok(x)
    }

    /// Runs blocks `start..` over residual states `x [b, t, hidden]` at positions `0..t`, then
    /// the final norm: the rest of [`Llama::hidden_states`] after
    /// [`Llama::hidden_after_blocks`]`(ids, start, ..)`. With [`Pass::Train`] gradients reach `x`
    /// and every trainable weight of those blocks.
    pub fn hidden_from_block(&self, x: &Tensor, start: usize, pass: Pass) -> Result<Tensor> {
        let x = self.run_blocks(x, start..self.layers.len(), pass)?;
        self.final_norm(&x, pass)
    }

    /// Runs blocks `blocks` over residual states `x [b, t, hidden]` at positions `0..t` (no
    /// final norm): the residual stream after block `blocks.end - 1` when `x` is the stream
    /// after block `blocks.start - 1`. Learners that adapt a few middle blocks run only those.
    /// With [`Pass::Train`] gradients reach `x` and every trainable weight of those blocks.
    pub fn run_blocks(&self, x: &Tensor, blocks: std::ops::Range<usize>, pass: Pass) -> Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        self.check_plain_run(t, blocks.end.max(blocks.start))?;
        let mut x = x.clone();
        for (i, block) in self.layers.iter().enumerate().take(blocks.end).skip(blocks.start) {
            x = self.ctx.forward(block, i, &x, Earlier::none(), pass)?;
        }
        Ok(x)
    }

    /// The input embeddings of `ids [b, t]`, `[b, t, hidden]` (scaled by the config's
    /// embedding scale, if any).
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.embed_tokens.rows(ids, self.dtype)?.reshape((b, t, self.ctx.cfg.hidden_size))?;
        Ok(match self.ctx.cfg.embedding_scale(self.dtype) {
            Some(s) => x.affine(s, 0.0)?,
            None => x,
        })
    }

    /// The final RMSNorm over residual states `[.., hidden]`.
    pub fn final_norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        rms_norm(x, &self.norm, self.ctx.cfg.rms_norm_eps, pass)
    }

    /// Refuses a block-range run the model cannot do: more blocks than it has, a sequence longer
    /// than its context, or virtual tokens (block-range runs do not prepend them).
    fn check_plain_run(&self, t: usize, blocks: usize) -> Result<()> {
        let (n, ctx) = (self.layers.len(), self.ctx.cfg.max_position_embeddings);
        if blocks > n {
            return Err(GraftError::Input(format!(
                "layer {blocks} asked for, but the model has {n} decoder blocks (0..={n})"
            )));
        }
        if t > ctx {
            return Err(GraftError::Input(format!(
                "sequence of {t} tokens is longer than the model's context of {ctx} tokens"
            )));
        }
        if self.virtual_tokens.is_some() {
            return Err(GraftError::Input(
                "block-range runs do not apply virtual tokens: remove the soft prompt / prefix first".into(),
            ));
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) the virtual tokens prepended to every sequence: a soft
    /// prompt or a per-layer key/value prefix. Checks the tensor's shape against the model.
    pub fn set_virtual_tokens(&mut self, tokens: Option<VirtualTokens>) -> Result<()> {
        if let Some(v) = &tokens {
            v.check(&self.ctx.cfg)?;
        }
        self.virtual_tokens = tokens;
        Ok(())
    }

    /// The virtual tokens in use, if any.
    pub fn virtual_tokens(&self) -> Option<&VirtualTokens> {
        self.virtual_tokens.as_ref()
    }

    /// Rows `ids` (u32, flattened) of the token-embedding table, `[n, hidden]`, unscaled (soft
    /// prompts are initialised from them).
    pub fn embedding_rows(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.rows(ids, self.dtype)
    }

    /// Projects hidden states `[.., hidden]` to vocabulary logits `[.., vocab]`.
    pub fn lm_head(&self, hidden: &Tensor, pass: Pass) -> Result<Tensor> {
        match (&self.lm_head, pass) {
            (Some(head), Pass::Train) => head.forward_train(hidden),
            (Some(head), Pass::Infer) => head.forward_infer(hidden),
            (None, Pass::Train) => Ok(hidden.broadcast_matmul(&self.embed_tokens.dense(self.dtype)?.t()?)?),
            // Long inputs take dense products, as quantized projections dequantize for them; the
            // quantized table a vocabulary slice at a time.
            (None, Pass::Infer) => match &self.quantized_head {
                Some(head) if !dequantizes_for(hidden, self.ctx.cfg.hidden_size) => {
                    Ok(head.forward(&hidden.to_dtype(DType::F32)?)?.to_dtype(hidden.dtype())?)
                }
                Some(_) => Ok(ops::head_logits(hidden, &self.embed_tokens.head_weight())?),
                None => dense_product(hidden, &self.embed_tokens.dense(self.dtype)?),
            },
        }
    }

    /// Turns gradient checkpointing on or off: with it, the training pass keeps only each
    /// block's input and recomputes the block during backward (about a third more compute for
    /// activation memory of one block instead of all of them). Checkpointed blocks hand their
    /// parameters' gradients over through [`Llama::grad_sink`].
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpoint = on.then(|| Arc::new(GradSink::default()));
    }

    /// What gradient checkpointing keeps, once on: each block's input (`Blocks`, the default) or
    /// only every few blocks' inputs, with each block's halves recomputed on their own
    /// (`Nested`: least memory for about one more forward per step). Gradients are the same.
    pub fn set_checkpoint_mode(&mut self, mode: CheckpointMode) {
        self.checkpoint_mode = mode;
    }

    /// Where checkpointed blocks leave their parameters' gradients during backward; the trainer
    /// merges them with the ones backward returns. `None` without checkpointing.
    pub fn grad_sink(&self) -> Option<Arc<GradSink>> {
        self.checkpoint.clone()
    }

    /// Whether any projection keeps GGUF-quantized blocks (QLoRA / lean inference).
    pub fn has_quantized(&self) -> bool {
        self.layers
            .iter()
            .flat_map(|b| b.attn.iter().chain(b.mlp.iter()))
            .chain(self.lm_head.iter())
            .any(|p| matches!(p.base(), BaseWeight::Quantized(_)))
    }

    /// The dtype losses over this model are accumulated in: f32, or f64 for an f64 model.
    pub fn work_dtype(&self) -> DType {
        if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// The LM head as one weight `[vocab, hidden]` (the tied embeddings when there is no separate
    /// head), for losses fused with it; `None` when adapters are attached to the head.
    pub fn head_weight(&self) -> Option<FrozenWeight> {
        match &self.lm_head {
            None => Some(self.embed_tokens.head_weight()),
            Some(head) if !head.has_adapters() => Some(head.frozen_weight()),
            Some(_) => None,
        }
    }

    /// Next-token NLL of the supervised positions of `ids [b, t]` against `targets [b, t]` (u32):
    /// `[n]`, one entry per position where `mask [b, t]` is non-zero (all `b·t` positions, times
    /// the mask, when every position or none is supervised), in f32 (f64 for f64 models).
    ///
    /// The LM head runs only on the supervised rows — for chat data, where only the answers are
    /// supervised, that skips most of the `[rows × vocab]` product — and fused with the
    /// cross-entropy in row chunks (`ops::lm_head_nll`), so the logits never exist whole; an LM
    /// head with adapters attached takes the plain route through its logits.
    pub fn token_nll(&self, ids: &Tensor, targets: &Tensor, mask: &Tensor, pass: Pass) -> Result<Tensor> {
        let hidden = self.hidden_states(ids, None, pass)?;
        let rows = SupervisedRows::of(&hidden, targets, mask, self.work_dtype())?;
        let (hidden, targets, mask) = (rows.hidden, rows.targets, rows.mask);
        let head = match self.head_weight() {
            Some(head) => head,
            None => {
                let logits = self.lm_head(&hidden, pass)?.to_dtype(self.work_dtype())?;
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
                return Ok((picked.neg()? * mask)?);
            }
        };
        Ok(ops::lm_head_nll(&hidden, &head, &targets, &mask)?)
    }
}

impl Model for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.ctx.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn forward_train(&self, ids: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden_states(ids, None, Pass::Train)?;
        self.lm_head(&hidden, Pass::Train)
    }

    fn forward_infer(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(ids, Some(cache), Pass::Infer)?;
        self.lm_head(&hidden, Pass::Infer)
    }

    /// Skips the LM head for all but the last position.
    fn forward_infer_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(ids, Some(cache), Pass::Infer)?;
        let t = hidden.dim(1)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        self.lm_head(&last, Pass::Infer)
    }

    /// Runs the LM head on the requested positions only.
    fn logits_at(&self, ids: &Tensor, positions: &[usize], cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(ids, Some(cache), Pass::Infer)?;
        let (b, t, h) = hidden.dims3()?;
        if positions.len() != b || positions.iter().any(|&p| p >= t) {
            return Err(GraftError::Input(format!(
                "logits_at: {} positions for {b} rows of {t} tokens",
                positions.len()
            )));
        }
        let flat: Vec<u32> = positions.iter().enumerate().map(|(i, &p)| (i * t + p) as u32).collect();
        let index = Tensor::from_vec(flat, b, &self.ctx.device)?;
        let rows = hidden.reshape((b * t, h))?.index_select(&index, 0)?;
        self.lm_head(&rows, Pass::Infer)
    }

    fn linear_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.layers.iter().flat_map(|b| b.attn.iter().chain(b.mlp.iter())).map(|p| p.name().to_string()).collect();
        if let Some(h) = &self.lm_head {
            names.push(h.name().to_string());
        }
        names
    }
}

/// The supervised positions of a batch, as rows: hidden states `[n, h]`, next-token targets `[n]`
/// and the mask `[n]` (work dtype). When every position or none is supervised, all `b·t` rows
/// are kept (times the mask); otherwise only the supervised ones, so a loss over the vocabulary
/// skips the rest (for chat data, most of the sequence).
pub struct SupervisedRows {
    /// Hidden states of the rows.
    pub hidden: Tensor,
    /// Their next-token targets (u32).
    pub targets: Tensor,
    /// Their mask (1 = counts).
    pub mask: Tensor,
    /// Which of the `b·t` positions the rows are (`None`: all of them).
    pub index: Option<Tensor>,
}

impl SupervisedRows {
    /// The rows of `hidden [b, t, h]` where `mask [b, t]` is non-zero, with `targets [b, t]`.
    pub fn of(hidden: &Tensor, targets: &Tensor, mask: &Tensor, work: DType) -> Result<Self> {
        let (b, t, h) = hidden.dims3()?;
        let hidden = hidden.reshape((b * t, h))?;
        let targets = targets.reshape(b * t)?;
        let mask = mask.reshape(b * t)?.to_dtype(work)?;
        let flags: Vec<f32> = mask.to_dtype(DType::F32)?.to_vec1()?;
        let rows: Vec<u32> = (0..flags.len() as u32).filter(|&i| flags[i as usize] != 0.0).collect();
        if rows.is_empty() || rows.len() == flags.len() {
            return Ok(Self { hidden, targets, mask, index: None });
        }
        let n = rows.len();
        let idx = Tensor::from_vec(rows, n, hidden.device())?;
        Ok(Self {
            hidden: hidden.index_select(&idx, 0)?,
            targets: targets.index_select(&idx, 0)?,
            mask: mask.index_select(&idx, 0)?,
            index: Some(idx),
        })
    }

    /// The same rows of other per-position states `[b, t, h']` (a teacher's hidden states).
    pub fn select(&self, states: &Tensor) -> Result<Tensor> {
        let (b, t, h) = states.dims3()?;
        let flat = states.reshape((b * t, h))?;
        Ok(match &self.index {
            Some(idx) => flat.index_select(idx, 0)?,
            None => flat,
        })
    }
}
