//! The Whisper network: the audio encoder (two convolutions, sinusoidal positions, pre-norm
//! blocks, a final norm) and the text decoder (token and learned position embeddings, causal
//! self-attention, cross-attention over the audio, a final norm, the output tied to the token
//! embeddings), with a training path over whole sequences and a KV-cached decoding path.

use super::layers::{DecoderLayer, DecoderMemory, EncoderLayer};
use crate::io::ctranslate2::whisper::WhisperDims;
use crate::models::bert::model::{gelu, LayerNorm};
use crate::models::linear::{BaseWeight, Proj};
use crate::models::llama::Pass;
use crate::ops::CausalMask;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};

/// A 1-D convolution of kernel 3 and padding 1, followed by GELU (as CTranslate2's Whisper
/// encoder runs both of its convolutions).
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// `[out, in, 3]`.
    pub(super) weight: Tensor,
    /// `[1, out, 1]`.
    pub(super) bias: Tensor,
    /// 1 for the first convolution, 2 for the second (halving the frames).
    pub(super) stride: usize,
}

impl Conv1d {
    /// `x [b, in, frames] → GELU(conv(x)) [b, out, frames / stride]`.
    fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let y = x.conv1d(&self.weight, 1, self.stride, 1, 1)?.broadcast_add(&self.bias)?;
        gelu(&y, pass)
    }
}

/// The audio encoder: log-mel `[b, n_mels, 3000]` → states `[b, 1500, d]`.
#[derive(Debug, Clone)]
pub struct WhisperEncoder {
    pub(super) conv1: Conv1d,
    pub(super) conv2: Conv1d,
    /// Sinusoidal position encodings, stored in the model file, `[audio_ctx, d]`.
    pub(super) positions: Tensor,
    /// The blocks (`encoder.layers.{i}`).
    pub layers: Vec<EncoderLayer>,
    pub(super) norm: LayerNorm,
}

/// The text decoder: tokens and encoder states → logits over the vocabulary.
#[derive(Debug, Clone)]
pub struct WhisperDecoder {
    /// Token embeddings `[vocab, d]` (also the output projection's weight).
    pub(super) embeddings: Tensor,
    /// Learned position embeddings `[text_ctx, d]`.
    pub(super) positions: Tensor,
    /// The blocks (`decoder.layers.{i}`).
    pub layers: Vec<DecoderLayer>,
    pub(super) norm: LayerNorm,
    /// The output projection `proj_out`, tied to [`Self::embeddings`].
    pub(super) proj_out: Proj,
}

/// What incremental decoding keeps between steps: each decoder block's self-attention keys and
/// values (growing by the tokens fed), and its cross-attention keys and values of the encoder
/// states (computed once per audio).
#[derive(Debug, Clone)]
pub struct WhisperCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl WhisperCache {
    /// Number of token positions already fed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Beam search over one audio: keeps the rows `rows` (old batch indices, repeats allowed)
    /// of the self-attention keys and values, so row `i` continues the sequence of old row
    /// `rows[i]`. The cross-attention keys and values, the same audio on every row, are
    /// repeated to the new batch size when it changes (once, as the first beam expands).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let Some(device) = self.cross.first().map(|(k, _)| k.device().clone()) else {
            return Ok(());
        };
        let index = Tensor::new(rows, &device)?;
        for kv in self.self_kv.iter_mut().flatten() {
            *kv = (kv.0.index_select(&index, 0)?, kv.1.index_select(&index, 0)?);
        }
        let zeros = Tensor::zeros(rows.len(), DType::U32, &device)?;
        for (k, v) in &mut self.cross {
            if k.dim(0)? != rows.len() {
                let first = |t: &Tensor| t.narrow(0, 0, 1)?.index_select(&zeros, 0);
                *k = first(k)?;
                *v = first(v)?;
            }
        }
        Ok(())
    }
}

/// A Whisper model: encoder and decoder over one set of weights, on one device in one dtype.
#[derive(Debug, Clone)]
pub struct Whisper {
    /// The network's sizes.
    pub dims: WhisperDims,
    /// The audio encoder.
    pub encoder: WhisperEncoder,
    /// The text decoder.
    pub decoder: WhisperDecoder,
    pub(super) device: Device,
    pub(super) dtype: DType,
}

impl Whisper {
    /// Where the weights live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Precision of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes log-mel spectrograms `mel [b, n_mels, frames]` (frames at most twice the encoder
    /// positions: 3000 for 30 s) into the encoder states `[b, frames / 2, d]`.
    pub fn encode(&self, mel: &Tensor, pass: Pass) -> Result<Tensor> {
        let (_, n_mels, frames) = mel.dims3()?;
        if n_mels != self.dims.n_mels || frames == 0 || frames > 2 * self.dims.audio_ctx {
            return Err(GraftError::Input(format!(
                "the encoder takes [batch, {}, up to {}] log-mel frames, got {:?}",
                self.dims.n_mels,
                2 * self.dims.audio_ctx,
                mel.dims()
            )));
        }
        let e = &self.encoder;
        let x = e.conv1.forward(&mel.to_dtype(self.dtype)?, pass)?;
        let x = e.conv2.forward(&x, pass)?.transpose(1, 2)?;
        let n = x.dim(1)?;
        let mut x = x.broadcast_add(&e.positions.narrow(0, 0, n)?)?;
        for layer in &e.layers {
            x = layer.forward(&x, pass)?;
        }
        e.norm.forward(&x, pass)
    }

    /// Training forward of the decoder: `tokens [b, t]` (u32) over the encoder states
    /// `audio [b, frames, d]` → logits `[b, t, vocab]`, causal over the whole sequence;
    /// differentiable with respect to trainable weights and adapters (and to `audio`).
    pub fn decode_train(&self, tokens: &Tensor, audio: &Tensor) -> Result<Tensor> {
        self.decode_logits(tokens, audio, Pass::Train)
    }

    /// The decoder over whole sequences `tokens [b, t]` and encoder states `audio
    /// [b, frames, d]` through the kernels of `pass`: logits `[b, t, vocab]` (teacher forcing;
    /// [`Pass::Infer`] for evaluation without a graph).
    pub fn decode_logits(&self, tokens: &Tensor, audio: &Tensor, pass: Pass) -> Result<Tensor> {
        let cross = self.cross_keys_values(audio, pass)?;
        self.decode(tokens, 0, &cross, None, pass)
    }

    /// A decoding cache for the encoder states `audio [b, frames, d]`: every block's
    /// cross-attention keys and values, computed here once.
    pub fn new_cache(&self, audio: &Tensor) -> Result<WhisperCache> {
        let cross = self.cross_keys_values(audio, Pass::Infer)?;
        Ok(WhisperCache { self_kv: vec![None; self.decoder.layers.len()], cross, len: 0 })
    }

    /// Incremental decoding: `tokens [b, t]` placed after the `cache.len()` tokens already fed;
    /// appends their keys and values to `cache` and returns their logits `[b, t, vocab]`.
    pub fn decode_step(&self, tokens: &Tensor, cache: &mut WhisperCache) -> Result<Tensor> {
        let offset = cache.len;
        let logits = self.decode(tokens, offset, &cache.cross, Some(&mut cache.self_kv), Pass::Infer)?;
        cache.len += tokens.dim(1)?;
        Ok(logits)
    }

    /// Each decoder block's cross-attention keys and values of `audio`.
    fn cross_keys_values(&self, audio: &Tensor, pass: Pass) -> Result<Vec<(Tensor, Tensor)>> {
        let audio = audio.to_dtype(self.dtype)?;
        self.decoder.layers.iter().map(|l| l.cross_attn.keys_values(&audio, pass)).collect()
    }

    /// The decoder over `tokens` at positions `offset..`, with the earlier positions' keys and
    /// values in `past` (updated) where given.
    fn decode(
        &self,
        tokens: &Tensor,
        offset: usize,
        cross: &[(Tensor, Tensor)],
        mut past: Option<&mut Vec<Option<(Tensor, Tensor)>>>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if t == 0 || offset + t > self.dims.text_ctx {
            return Err(GraftError::Input(format!(
                "{t} tokens after {offset} do not fit the decoder's {} positions",
                self.dims.text_ctx
            )));
        }
        let dec = &self.decoder;
        let d = self.dims.d_model;
        let emb = dec.embeddings.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, d))?;
        let mut x = emb.broadcast_add(&dec.positions.narrow(0, offset, t)?)?;
        let mask = CausalMask { rep: 1, t, offset, window: None };
        for (i, layer) in dec.layers.iter().enumerate() {
            let earlier = past.as_ref().and_then(|p| p[i].clone());
            let memory = DecoderMemory { past: earlier, cross: &cross[i], mask: Some(&mask) };
            let (y, kv) = layer.forward(&x, memory, pass)?;
            if let Some(p) = past.as_mut() {
                p[i] = Some(kv);
            }
            x = y;
        }
        let x = dec.norm.forward(&x, pass)?;
        match pass {
            Pass::Train => dec.proj_out.forward_train(&x),
            Pass::Infer => dec.proj_out.forward_infer(&x),
        }
    }

    /// Every adaptable projection, named as in Hugging Face checkpoints
    /// (`encoder.layers.0.self_attn.q_proj`, `decoder.layers.1.encoder_attn.v_proj`,
    /// `decoder.layers.2.fc1`); the tied output projection is not among them.
    pub fn projections_mut(&mut self) -> Vec<&mut Proj> {
        let enc = self.encoder.layers.iter_mut().flat_map(|l| l.projections_mut());
        enc.chain(self.decoder.layers.iter_mut().flat_map(|l| l.projections_mut())).collect()
    }

    /// Makes the weight and bias of every projection whose name satisfies `select` trainable
    /// (full fine-tuning of those projections) and returns them as variables under their
    /// Hugging Face names (`model.decoder.layers.0.fc1.weight`).
    pub fn make_projections_trainable(&mut self, select: impl Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        let dtype = self.dtype;
        let mut vars = Vec::new();
        for p in self.projections_mut() {
            if !select(p.name()) {
                continue;
            }
            let weight = Var::from_tensor(&p.dense_weight(dtype)?)?;
            p.set_base(BaseWeight::Dense(weight.as_tensor().clone()))?;
            vars.push((format!("model.{}.weight", p.name()), weight));
            if let Some(bias) = p.bias().cloned() {
                let bias = Var::from_tensor(&bias)?;
                p.set_bias(Some(bias.as_tensor().clone()));
                vars.push((format!("model.{}.bias", p.name()), bias));
            }
        }
        Ok(vars)
    }

    /// Names of every adaptable projection (see [`Self::projections_mut`]).
    pub fn linear_names(&self) -> Vec<String> {
        self.clone().projections_mut().iter().map(|p| p.name().to_string()).collect()
    }
}
