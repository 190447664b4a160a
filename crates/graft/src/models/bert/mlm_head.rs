//! BERT's masked-LM head (`BertForMaskedLM`'s `cls.predictions`): a dense layer (hidden →
//! hidden), GELU and LayerNorm, then a decoder *tied* to the word embeddings plus an output bias:
//! `logits = LN(gelu(h W_tᵀ + b_t)) Eᵀ + b`.
//!
//! The decoder is not a tensor of its own: [`MlmHead::logits`] multiplies by the encoder's
//! [`Bert::word_embeddings`](super::Bert::word_embeddings) each time, so when the embeddings
//! train, the decoder is the same variable and storage. Checkpoints that carry the head (BERT
//! pretraining checkpoints, graft's own exports) provide its tensors; sentence-transformers
//! models such as all-MiniLM-L6-v2 have none, and the missing ones are initialised as BERT does
//! (normal with standard deviation 0.02 for the dense weight, 0 for biases, LayerNorm 1 / 0).

use super::config::BertConfig;
use super::model::{gelu, LayerNorm};
use super::weights::BertWeights;
use crate::models::hparams::{Checks, Dim};
use crate::models::llama::Pass;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Standard deviation of BERT's initial weights (`initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// Checkpoint names of the head's tensors (HF's `BertForMaskedLM`; the tied decoder weight,
/// `cls.predictions.decoder.weight`, is the word-embedding table and is not stored apart).
pub const DENSE_WEIGHT: &str = "cls.predictions.transform.dense.weight";
/// See [`DENSE_WEIGHT`].
pub const DENSE_BIAS: &str = "cls.predictions.transform.dense.bias";
/// See [`DENSE_WEIGHT`].
pub const NORM_WEIGHT: &str = "cls.predictions.transform.LayerNorm.weight";
/// See [`DENSE_WEIGHT`].
pub const NORM_BIAS: &str = "cls.predictions.transform.LayerNorm.bias";
/// See [`DENSE_WEIGHT`].
pub const OUTPUT_BIAS: &str = "cls.predictions.bias";

/// The masked-LM head of a BERT encoder.
#[derive(Debug, Clone)]
pub struct MlmHead {
    dense_weight: Tensor,
    dense_bias: Tensor,
    norm: LayerNorm,
    bias: Tensor,
    /// Names of the tensors that were freshly initialised (absent from the checkpoint).
    fresh: Vec<String>,
}

impl MlmHead {
    /// The head of the checkpoint `weights` where it has its tensors (shapes checked against
    /// `cfg`), the missing ones initialised from `seed`.
    pub fn load_or_init(
        cfg: &BertConfig,
        weights: &BertWeights,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let same_name = |field: &str| field.to_string();
        let checks = Checks::new(&same_name);
        let hidden = [("hidden_size", cfg.hidden_size)];
        let vocab = [("vocab_size", cfg.vocab_size)];
        let mut init = Init::new(seed);
        let mut fresh = Vec::new();
        let mut get = |name: &str, dims: &[Dim<'_>], value: InitValue| -> Result<Tensor> {
            let shape: Vec<usize> = dims.iter().map(Dim::size).collect();
            // Drawn whether used or not, so each tensor's values do not depend on which others exist.
            let drawn = init.tensor(&shape, value, device, dtype)?;
            match weights.shape_exact(name) {
                Some(found) => {
                    checks
                        .shape(name, Some(found), dims)
                        .map_err(|reason| GraftError::model(weights.origin(), reason))?;
                    weights.get_exact(name, &shape, dtype, device)
                }
                None => {
                    fresh.push(name.to_string());
                    Ok(drawn)
                }
            }
        };
        let (h, v) = (Dim(&hidden), Dim(&vocab));
        let dense_weight = get(DENSE_WEIGHT, &[h, h], InitValue::Normal)?;
        let dense_bias = get(DENSE_BIAS, &[h], InitValue::Zero)?;
        let norm_weight = get(NORM_WEIGHT, &[h], InitValue::One)?;
        let norm_bias = get(NORM_BIAS, &[h], InitValue::Zero)?;
        let bias = get(OUTPUT_BIAS, &[v], InitValue::Zero)?;
        let norm = LayerNorm { weight: norm_weight, bias: norm_bias, eps: cfg.layer_norm_eps };
        Ok(Self { dense_weight, dense_bias, norm, bias, fresh })
    }

    /// A freshly initialised head for an encoder of shape `cfg`.
    pub fn init(cfg: &BertConfig, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        let mut init = Init::new(seed);
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let mut fresh = Vec::new();
        let mut t = |name: &str, shape: &[usize], value| {
            fresh.push(name.to_string());
            init.tensor(shape, value, device, dtype)
        };
        let dense_weight = t(DENSE_WEIGHT, &[h, h], InitValue::Normal)?;
        let dense_bias = t(DENSE_BIAS, &[h], InitValue::Zero)?;
        let norm = LayerNorm {
            weight: t(NORM_WEIGHT, &[h], InitValue::One)?,
            bias: t(NORM_BIAS, &[h], InitValue::Zero)?,
            eps: cfg.layer_norm_eps,
        };
        let bias = t(OUTPUT_BIAS, &[v], InitValue::Zero)?;
        Ok(Self { dense_weight, dense_bias, norm, bias, fresh })
    }

    /// Names of the head tensors that were freshly initialised rather than loaded.
    pub fn fresh(&self) -> &[String] {
        &self.fresh
    }

    /// Makes every head tensor trainable and returns the variables by checkpoint name.
    pub fn make_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::with_capacity(5);
        for (name, t) in [
            (DENSE_WEIGHT, &mut self.dense_weight),
            (DENSE_BIAS, &mut self.dense_bias),
            (NORM_WEIGHT, &mut self.norm.weight),
            (NORM_BIAS, &mut self.norm.bias),
            (OUTPUT_BIAS, &mut self.bias),
        ] {
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((name.to_string(), v));
        }
        Ok(vars)
    }

    /// The head's own tensors by checkpoint name (the tied decoder is the word embeddings).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        [
            (DENSE_WEIGHT, &self.dense_weight),
            (DENSE_BIAS, &self.dense_bias),
            (NORM_WEIGHT, &self.norm.weight),
            (NORM_BIAS, &self.norm.bias),
            (OUTPUT_BIAS, &self.bias),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
    }

    /// Logits `[n, vocab]` of the hidden states `rows` `[n, hidden]`, decoding with
    /// `word_embeddings` `[vocab, hidden]` (the encoder's own table: the tie).
    pub fn logits(&self, rows: &Tensor, word_embeddings: &Tensor, pass: Pass) -> Result<Tensor> {
        let x = rows.matmul(&self.dense_weight.t()?)?.broadcast_add(&self.dense_bias)?;
        let x = self.norm.forward(&gelu(&x, pass)?, pass)?;
        Ok(x.matmul(&word_embeddings.t()?)?.broadcast_add(&self.bias)?)
    }
}

/// What a fresh tensor holds.
#[derive(Debug, Clone, Copy)]
enum InitValue {
    /// Normal, mean 0, standard deviation [`INIT_STD`].
    Normal,
    Zero,
    One,
}

/// Seeded initial values: normal draws by Box–Muller from a ChaCha8 stream (fixed by its
/// specification, so the same seed gives the same head on every platform).
struct Init(ChaCha8Rng);

impl Init {
    fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn tensor(&mut self, shape: &[usize], value: InitValue, device: &Device, dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match value {
            InitValue::Zero => vec![0.0; n],
            InitValue::One => vec![1.0; n],
            InitValue::Normal => (0..n)
                .map(|_| {
                    let (u1, u2) = (1.0 - self.uniform(), self.uniform());
                    INIT_STD * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
                .collect(),
        };
        Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
    }
}
