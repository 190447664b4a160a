//! Whisper in Hugging Face layout: the network from a `WhisperForConditionalGeneration`
//! safetensors checkpoint (users' own fine-tuned models) and back (an export that transformers,
//! PEFT and the CTranslate2 converter read).
//!
//! Names are transformers': `model.encoder.conv1.weight`, `model.encoder.embed_positions.weight`,
//! `model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}` (`k_proj` has no bias),
//! `…self_attn_layer_norm`, `…fc1`, `…fc2`, `…final_layer_norm`, `model.encoder.layer_norm`; the
//! decoder's the same plus `encoder_attn` and `encoder_attn_layer_norm`, with
//! `model.decoder.embed_tokens.weight` (tied to the output projection `proj_out`) and
//! `model.decoder.embed_positions.weight`.

use super::layers::{Attention, DecoderLayer, EncoderLayer, FeedForward};
use super::model::{Conv1d, Whisper};
use super::source::{build, Side, WeightSource};
use crate::io::ctranslate2::whisper::WhisperDims;
use crate::models::bert::model::LayerNorm;
use crate::models::linear::{BaseWeight, Proj};
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// LayerNorm ε of every Whisper norm.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The sizes in a Hugging Face Whisper `config.json` (its other keys are not read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfWhisperSizes {
    /// Width.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Encoder heads.
    pub encoder_attention_heads: usize,
    /// Decoder heads.
    pub decoder_attention_heads: usize,
    /// Encoder feed-forward width.
    pub encoder_ffn_dim: usize,
    /// Decoder feed-forward width.
    pub decoder_ffn_dim: usize,
    /// Mel bins.
    pub num_mel_bins: usize,
    /// Encoder positions.
    pub max_source_positions: usize,
    /// Decoder positions.
    pub max_target_positions: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
}

impl HfWhisperSizes {
    /// The network sizes these describe; an encoder and decoder of different feed-forward widths
    /// are refused (every released Whisper has one width).
    pub fn dims(&self, path: &Path) -> Result<WhisperDims> {
        if self.encoder_ffn_dim != self.decoder_ffn_dim {
            return Err(GraftError::model(
                path,
                format!(
                    "encoder_ffn_dim {} and decoder_ffn_dim {} differ; graft's Whisper has one feed-forward width",
                    self.encoder_ffn_dim, self.decoder_ffn_dim
                ),
            ));
        }
        Ok(WhisperDims {
            n_mels: self.num_mel_bins,
            d_model: self.d_model,
            ffn_dim: self.encoder_ffn_dim,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            encoder_heads: self.encoder_attention_heads,
            decoder_heads: self.decoder_attention_heads,
            vocab_size: self.vocab_size,
            audio_ctx: self.max_source_positions,
            text_ctx: self.max_target_positions,
        })
    }

    /// The sizes of `dims`.
    pub fn of(dims: &WhisperDims) -> Self {
        Self {
            d_model: dims.d_model,
            encoder_layers: dims.encoder_layers,
            decoder_layers: dims.decoder_layers,
            encoder_attention_heads: dims.encoder_heads,
            decoder_attention_heads: dims.decoder_heads,
            encoder_ffn_dim: dims.ffn_dim,
            decoder_ffn_dim: dims.ffn_dim,
            num_mel_bins: dims.n_mels,
            max_source_positions: dims.audio_ctx,
            max_target_positions: dims.text_ctx,
            vocab_size: dims.vocab_size,
        }
    }
}

/// Tensors of one checkpoint file, taken by name with their shapes checked; what is left at the
/// end is reported as unknown.
struct Tensors<'a> {
    map: HashMap<String, Tensor>,
    path: &'a Path,
    dtype: DType,
}

impl Tensors<'_> {
    fn take(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self
            .map
            .remove(name)
            .ok_or_else(|| GraftError::model(self.path, format!("no tensor `{name}`; not a Whisper checkpoint")))?;
        if t.dims() != dims {
            return Err(GraftError::model(
                self.path,
                format!("`{name}` has shape {:?}, the network needs {dims:?}", t.dims()),
            ));
        }
        Ok(t.to_dtype(self.dtype)?)
    }

    fn norm(&mut self, scope: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{scope}.weight"), &[d])?,
            bias: self.take(&format!("{scope}.bias"), &[d])?,
            eps: LAYER_NORM_EPS,
        })
    }

    /// The linear `model.{name}` as a projection called `name`; `bias` says whether it has one.
    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Proj> {
        let w = self.take(&format!("model.{name}.weight"), &[out, inp])?;
        let b = if bias { Some(self.take(&format!("model.{name}.bias"), &[out])?) } else { None };
        Proj::new(name, BaseWeight::Dense(w), b)
    }

    fn attention(&mut self, prefix: &str, d: usize, heads: usize) -> Result<Attention> {
        Ok(Attention {
            proj: [
                self.linear(&format!("{prefix}.q_proj"), d, d, true)?,
                self.linear(&format!("{prefix}.k_proj"), d, d, false)?,
                self.linear(&format!("{prefix}.v_proj"), d, d, true)?,
                self.linear(&format!("{prefix}.out_proj"), d, d, true)?,
            ],
            heads,
        })
    }

    fn ffn(&mut self, prefix: &str, dims: &WhisperDims) -> Result<FeedForward> {
        let (d, f) = (dims.d_model, dims.ffn_dim);
        Ok(FeedForward {
            proj: [
                self.linear(&format!("{prefix}.fc1"), f, d, true)?,
                self.linear(&format!("{prefix}.fc2"), d, f, true)?,
            ],
        })
    }

    fn conv(&mut self, scope: &str, inp: usize, d: usize, stride: usize) -> Result<Conv1d> {
        Ok(Conv1d {
            weight: self.take(&format!("{scope}.weight"), &[d, inp, 3])?,
            bias: self.take(&format!("{scope}.bias"), &[d])?.reshape((1, d, 1))?,
            stride,
        })
    }
}

impl WeightSource for Tensors<'_> {
    fn bad(&self, name: &str, reason: String) -> GraftError {
        GraftError::model(self.path, format!("{name}: {reason}"))
    }

    fn heads_key(&self, side: Side) -> &'static str {
        match side {
            Side::Encoder => "encoder_attention_heads",
            Side::Decoder => "decoder_attention_heads",
        }
    }

    fn encoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<EncoderLayer> {
        let (p, d) = (format!("encoder.layers.{i}"), dims.d_model);
        Ok(EncoderLayer {
            attn_norm: self.norm(&format!("model.{p}.self_attn_layer_norm"), d)?,
            attn: self.attention(&format!("{p}.self_attn"), d, dims.encoder_heads)?,
            ffn_norm: self.norm(&format!("model.{p}.final_layer_norm"), d)?,
            ffn: self.ffn(&p, dims)?,
        })
    }

    fn decoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<DecoderLayer> {
        let (p, d) = (format!("decoder.layers.{i}"), dims.d_model);
        Ok(DecoderLayer {
            self_norm: self.norm(&format!("model.{p}.self_attn_layer_norm"), d)?,
            self_attn: self.attention(&format!("{p}.self_attn"), d, dims.decoder_heads)?,
            cross_norm: self.norm(&format!("model.{p}.encoder_attn_layer_norm"), d)?,
            cross_attn: self.attention(&format!("{p}.encoder_attn"), d, dims.decoder_heads)?,
            ffn_norm: self.norm(&format!("model.{p}.final_layer_norm"), d)?,
            ffn: self.ffn(&p, dims)?,
        })
    }

    fn conv(&mut self, n: usize, dims: &WhisperDims) -> Result<Conv1d> {
        let inp = if n == 1 { dims.n_mels } else { dims.d_model };
        Tensors::conv(self, &format!("model.encoder.conv{n}"), inp, dims.d_model, n)
    }

    fn positions(&mut self, side: Side, dims: &WhisperDims) -> Result<Tensor> {
        match side {
            Side::Encoder => self.take("model.encoder.embed_positions.weight", &[dims.audio_ctx, dims.d_model]),
            Side::Decoder => self.take("model.decoder.embed_positions.weight", &[dims.text_ctx, dims.d_model]),
        }
    }

    fn final_norm(&mut self, side: Side, dims: &WhisperDims) -> Result<LayerNorm> {
        let scope = if side == Side::Encoder { "model.encoder.layer_norm" } else { "model.decoder.layer_norm" };
        self.norm(scope, dims.d_model)
    }

    fn embeddings(&mut self, dims: &WhisperDims) -> Result<Tensor> {
        self.take("model.decoder.embed_tokens.weight", &[dims.vocab_size, dims.d_model])
    }
}

impl Whisper {
    /// Builds the network of a Hugging Face Whisper checkpoint (`path`, a safetensors file) with
    /// the sizes `dims`, on `device` in `dtype`. A missing tensor, a wrong shape and a tensor the
    /// network does not use are errors naming it; `proj_out.weight`, when present, must equal
    /// the token embeddings (the output is tied to them).
    pub fn from_hf_checkpoint(path: &Path, dims: WhisperDims, device: &Device, dtype: DType) -> Result<Self> {
        let map = candle_core::safetensors::load(path, device)
            .map_err(|e| GraftError::model(path, format!("unreadable safetensors file: {e}")))?;
        let mut t = Tensors { map, path, dtype };
        let proj_out = t.map.remove("proj_out.weight");
        let model = build(&mut t, dims, device, dtype)?;
        if let Some(out) = proj_out {
            let emb = &model.decoder.embeddings;
            let same = out.dims() == emb.dims()
                && out.to_dtype(dtype)?.sub(emb)?.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? == 0.0;
            if !same {
                return Err(GraftError::model(
                    path,
                    "`proj_out.weight` differs from `model.decoder.embed_tokens.weight`; graft's Whisper ties them",
                ));
            }
        }
        let mut left: Vec<String> = t.map.into_keys().collect();
        if !left.is_empty() {
            left.sort();
            return Err(GraftError::model(path, format!("tensors the Whisper network does not use: {left:?}")));
        }
        Ok(model)
    }

    /// Every weight under its Hugging Face name in `dtype`, adapters merged in (what
    /// [`Self::from_hf_checkpoint`] reads; `proj_out` is left out, tied to the embeddings).
    pub fn hf_tensors(&self, dtype: DType) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut push = |name: String, t: &Tensor| -> Result<()> {
            out.push((name, t.to_dtype(dtype)?.contiguous()?));
            Ok(())
        };
        let norm = |push: &mut dyn FnMut(String, &Tensor) -> Result<()>, scope: String, n: &LayerNorm| -> Result<()> {
            push(format!("{scope}.weight"), &n.weight)?;
            push(format!("{scope}.bias"), &n.bias)
        };
        let e = &self.encoder;
        for (conv, name) in [(&e.conv1, "conv1"), (&e.conv2, "conv2")] {
            push(format!("model.encoder.{name}.weight"), &conv.weight)?;
            push(format!("model.encoder.{name}.bias"), &conv.bias.flatten_all()?)?;
        }
        push("model.encoder.embed_positions.weight".into(), &e.positions)?;
        for (i, l) in e.layers.iter().enumerate() {
            norm(&mut push, format!("model.encoder.layers.{i}.self_attn_layer_norm"), &l.attn_norm)?;
            norm(&mut push, format!("model.encoder.layers.{i}.final_layer_norm"), &l.ffn_norm)?;
        }
        norm(&mut push, "model.encoder.layer_norm".into(), &e.norm)?;
        let dec = &self.decoder;
        push("model.decoder.embed_tokens.weight".into(), &dec.embeddings)?;
        push("model.decoder.embed_positions.weight".into(), &dec.positions)?;
        for (i, l) in dec.layers.iter().enumerate() {
            norm(&mut push, format!("model.decoder.layers.{i}.self_attn_layer_norm"), &l.self_norm)?;
            norm(&mut push, format!("model.decoder.layers.{i}.encoder_attn_layer_norm"), &l.cross_norm)?;
            norm(&mut push, format!("model.decoder.layers.{i}.final_layer_norm"), &l.ffn_norm)?;
        }
        norm(&mut push, "model.decoder.layer_norm".into(), &dec.norm)?;
        for p in self.clone().projections_mut() {
            let w = p.effective_weight(self.dtype)?;
            push(format!("model.{}.weight", p.name()), &w)?;
            // CTranslate2 stores a zero key bias; transformers' k_proj has none.
            if let (Some(b), false) = (p.bias(), p.name().ends_with(".k_proj")) {
                push(format!("model.{}.bias", p.name()), b)?;
            }
        }
        Ok(out)
    }
}

/// The files of a Hugging Face Whisper folder graft reads: `config.json`, `model.safetensors`,
/// `tokenizer.json` and, when present, `generation_config.json`.
#[derive(Debug, Clone)]
pub struct HfWhisperFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The network's sizes (from `config.json`).
    pub dims: WhisperDims,
    /// `model.safetensors`.
    pub checkpoint: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer_json: PathBuf,
}

impl HfWhisperFolder {
    /// Whether `dir` looks like a Hugging Face Whisper folder (`config.json` and
    /// `model.safetensors`).
    pub fn is_one(dir: &Path) -> bool {
        dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()
    }

    /// Reads `dir`'s `config.json` (`model_type` must be `whisper`) and checks the other files.
    pub fn open(dir: &Path) -> Result<Self> {
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(file).is_file() {
                return Err(GraftError::model(dir, format!("no {file}; not a Hugging Face Whisper folder")));
            }
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("invalid JSON: {e}")))?;
        if value["model_type"] != "whisper" {
            return Err(GraftError::model(&path, format!("model_type is {}, not \"whisper\"", value["model_type"])));
        }
        let sizes: HfWhisperSizes = serde_json::from_value(value)
            .map_err(|e| GraftError::model(&path, format!("invalid Whisper config: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            dims: sizes.dims(&path)?,
            checkpoint: dir.join("model.safetensors"),
            tokenizer_json: dir.join("tokenizer.json"),
        })
    }

    /// The decoding settings in `generation_config.json` (or `config.json` when it has none):
    /// suppressed tokens, tokens suppressed at the first position, language token ids.
    pub fn decoding(&self) -> Result<crate::io::ctranslate2::whisper::WhisperConfig> {
        let gen = self.dir.join("generation_config.json");
        let path = if gen.is_file() { gen } else { self.dir.join("config.json") };
        let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("invalid JSON: {e}")))?;
        let ids = |key: &str| -> Result<Vec<u32>> {
            match &v[key] {
                serde_json::Value::Null => Ok(Vec::new()),
                list => serde_json::from_value(list.clone())
                    .map_err(|e| GraftError::model(&path, format!("`{key}` is not a list of token ids: {e}"))),
            }
        };
        let mut lang_ids: Vec<u32> = match &v["lang_to_id"] {
            serde_json::Value::Object(m) => m
                .values()
                .map(|id| id.as_u64().and_then(|i| u32::try_from(i).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| GraftError::model(&path, "`lang_to_id` values are not token ids"))?,
            _ => Vec::new(),
        };
        lang_ids.sort_unstable();
        Ok(crate::io::ctranslate2::whisper::WhisperConfig {
            suppress_ids: ids("suppress_tokens")?,
            suppress_ids_begin: ids("begin_suppress_tokens")?,
            lang_ids,
            alignment_heads: Vec::new(),
        })
    }
}
