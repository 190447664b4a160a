//! Sentence embeddings: tokenize, run the encoder over right-padded batches, mean-pool the
//! unmasked positions and L2-normalise (the sentence-transformers recipe of all-MiniLM-L6-v2).

use super::config::BertConfig;
use super::dropout::Dropout;
use super::model::{Bert, BertInput};
use super::weights::BertWeights;
use crate::assets::ModelSource;
use crate::models::llama::Pass;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, D};
use std::path::Path;

/// Mean of `hidden` `[batch, seq, dim]` over the positions where `mask` `[batch, seq]` is 1:
/// `Σ_t m_t h_t / max(Σ_t m_t, 1e-9)` (sentence-transformers' mean pooling).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.maximum(1e-9)?;
    Ok(sum.broadcast_div(&count)?)
}

/// Rows of `x` `[batch, dim]` scaled to unit L2 norm: `x / max(‖x‖, 1e-12)` (PyTorch's
/// `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Token ids of one text, and whether it was cut to the encoder's length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// Ids including the special tokens (`[CLS] … [SEP]` for BERT).
    pub ids: Vec<u32>,
    /// Whether tokens were dropped to fit [`SentenceEncoder::max_len`].
    pub truncated: bool,
}

/// Embeddings of a list of texts, in input order.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `[n, dim]`, unit-norm rows, in the model dtype.
    pub vectors: Tensor,
    /// How many texts were longer than [`SentenceEncoder::max_len`] tokens and were truncated.
    pub n_truncated: usize,
    /// Tokens run through the encoder (special tokens included, padding excluded).
    pub n_tokens: usize,
}

/// A BERT encoder with its tokenizer and pooling: text in, unit-norm embedding out.
#[derive(Debug, Clone)]
pub struct SentenceEncoder {
    model: Bert,
    /// `tokenizer.json`'s pipeline with its own padding switched off (graft pads per batch) and
    /// truncation set to `max_len`.
    tokenizer: tokenizers::Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl SentenceEncoder {
    /// Loads a Hugging Face BERT folder (`config.json`, safetensors weights, `tokenizer.json`).
    ///
    /// Texts are truncated to `max_seq_length` of `sentence_bert_config.json` where the folder
    /// has one (256 for all-MiniLM-L6-v2), else to `max_position_embeddings`.
    pub fn from_hf_folder(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let cfg = BertConfig::from_hf_folder(dir)?;
        let weights = BertWeights::open(dir)?;
        let model = Bert::load(cfg, &weights, device, dtype)?;
        let tok = Tokenizer::from_hf_folder(dir)?;
        let max_len = sentence_max_len(dir)?
            .unwrap_or(model.config().max_position_embeddings)
            .min(model.config().max_position_embeddings);
        let pad_id = tok.pad_id().or(model.config().pad_token_id).unwrap_or(0);
        Self::new(model, tok.inner().clone(), max_len, pad_id)
    }

    /// The encoder of a resolved `--model` argument; only Hugging Face folders hold encoders.
    pub fn load(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        match source {
            ModelSource::HfFolder(dir) => Self::from_hf_folder(dir, device, dtype),
            ModelSource::Gguf(path) => Err(GraftError::model(
                path,
                "a GGUF file holds a decoder; embeddings need a BERT encoder folder \
                 (e.g. `--model all-minilm-l6-v2`)",
            )),
        }
    }

    /// Assembles an encoder from parts; `tokenizer`'s own padding is switched off and its
    /// truncation set to `max_len` tokens (special tokens included).
    pub fn new(model: Bert, mut tokenizer: tokenizers::Tokenizer, max_len: usize, pad_id: u32) -> Result<Self> {
        if max_len < 2 || max_len > model.config().max_position_embeddings {
            return Err(GraftError::Input(format!(
                "max_len {max_len} must be between 2 and the encoder's {} positions",
                model.config().max_position_embeddings
            )));
        }
        tokenizer.with_padding(None);
        let trunc = tokenizers::TruncationParams { max_length: max_len, ..Default::default() };
        tokenizer
            .with_truncation(Some(trunc))
            .map_err(|e| TokenizerError::Invalid(format!("cannot truncate to {max_len} tokens: {e}")))?;
        Ok(Self { model, tokenizer, max_len, pad_id })
    }

    /// The encoder.
    pub fn model(&self) -> &Bert {
        &self.model
    }

    /// The encoder, mutably (to unfreeze layers or attach adapters).
    pub fn model_mut(&mut self) -> &mut Bert {
        &mut self.model
    }

    /// The same encoder truncating its inputs to `max_len` tokens instead (between 2 and the
    /// encoder's positions).
    pub fn with_max_len(self, max_len: usize) -> Result<Self> {
        Self::new(self.model, self.tokenizer, max_len, self.pad_id)
    }

    /// The Hugging Face tokenizer pipeline (its padding off, truncation at [`Self::max_len`]).
    pub fn hf_tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    /// Longest input in tokens (special tokens included); longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of `text` with the special tokens the tokenizer adds (`[CLS] … [SEP]`).
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TokenizerError::Codec { what: "encoding", reason: e.to_string() })?;
        Ok(Tokenized { ids: enc.get_ids().to_vec(), truncated: !enc.get_overflowing().is_empty() })
    }

    /// Right-pads token sequences into one encoder input.
    pub fn batch_input(&self, seqs: &[Vec<u32>]) -> Result<BertInput> {
        BertInput::pad(seqs, self.pad_id, self.model.dtype(), self.model.device())
    }

    /// Embeds already-tokenized sequences in one padded forward: `[n, dim]`, unit-norm rows.
    /// With [`Pass::Train`] the result is differentiable with respect to trainable weights.
    pub fn embed_ids(&self, seqs: &[Vec<u32>], pass: Pass) -> Result<Tensor> {
        self.embed_ids_dropout(seqs, pass, None)
    }

    /// [`SentenceEncoder::embed_ids`] with the encoder's training dropout where `dropout` is
    /// given (two copies of a text in one batch then get different masks: SimCSE's two views).
    pub fn embed_ids_dropout(&self, seqs: &[Vec<u32>], pass: Pass, dropout: Option<&Dropout>) -> Result<Tensor> {
        let input = self.batch_input(seqs)?;
        let hidden = self.model.forward_dropout(&input, pass, dropout)?;
        l2_normalize(&mean_pool(&hidden, &input.mask)?)
    }

    /// [`SentenceEncoder::embed_ids`] over groups of similar length
    /// ([`in_length_groups`](crate::data::in_length_groups)), rows in input order: the same
    /// embeddings (and, with [`Pass::Train`], the same gradients) as one padded forward up to
    /// rounding, without the compute spent on padding when a batch mixes short and long texts.
    pub fn embed_ids_grouped(&self, seqs: &[Vec<u32>], pass: Pass) -> Result<Tensor> {
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        crate::data::in_length_groups(&lens, |group| {
            self.embed_ids(&group.iter().map(|&i| seqs[i].clone()).collect::<Vec<_>>(), pass)
        })
    }

    /// Embeds `texts` in batches of at most `batch_size`, for inference. Texts are grouped by
    /// length so that batches carry little padding; the result is in input order.
    /// `progress(done)` is called after each batch with the number of texts embedded so far.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Embeddings> {
        if batch_size == 0 {
            return Err(GraftError::Input("batch size must be at least 1".into()));
        }
        let tokenized = texts.iter().map(|t| self.tokenize(t.as_ref())).collect::<Result<Vec<_>>>()?;
        let n_truncated = tokenized.iter().filter(|t| t.truncated).count();
        let n_tokens = tokenized.iter().map(|t| t.ids.len()).sum();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokenized[i].ids.len());
        let mut rows: Vec<Option<Tensor>> = vec![None; texts.len()];
        let mut done = 0;
        for chunk in order.chunks(batch_size) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| tokenized[i].ids.clone()).collect();
            let vectors = self.embed_ids(&seqs, Pass::Infer)?;
            for (row, &i) in chunk.iter().enumerate() {
                rows[i] = Some(vectors.get(row)?);
            }
            done += chunk.len();
            progress(done);
        }
        let rows: Vec<Tensor> = rows.into_iter().flatten().collect();
        let vectors = if rows.is_empty() {
            Tensor::zeros((0, self.dim()), self.model.dtype(), self.model.device())?
        } else {
            Tensor::stack(&rows, 0)?
        };
        Ok(Embeddings { vectors, n_truncated, n_tokens })
    }
}

/// `max_seq_length` of the folder's `sentence_bert_config.json`, where it has one.
fn sentence_max_len(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("invalid JSON: {e}")))?;
    match value.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| GraftError::model(&path, format!("`max_seq_length` must be a positive integer, found {v}"))),
    }
}
