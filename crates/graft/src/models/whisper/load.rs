//! Building the Whisper network from a CTranslate2 `WhisperSpec` folder: variables renamed to
//! Hugging Face's module names, fused projections split, every shape checked against the sizes
//! the folder declares before it is used.

use super::layers::{Attention, DecoderLayer, EncoderLayer, FeedForward};
use super::model::{Conv1d, Whisper};
use super::source::{build, Side, WeightSource};
use crate::io::ctranslate2::whisper::{WhisperDims, WhisperFolder};
use crate::io::ctranslate2::{Ct2ErrorKind, Ct2Model};
use crate::models::bert::model::LayerNorm;
use crate::models::linear::{BaseWeight, Proj};
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// LayerNorm ε of every Whisper norm (CTranslate2's default for norms with a bias).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Reads variables of one model onto one device in one dtype, checking their shapes.
struct Reader<'a> {
    model: &'a Ct2Model,
    device: &'a Device,
    dtype: DType,
}

impl Reader<'_> {
    /// The error "`name`: `reason`" about this model.
    fn bad(&self, name: &str, reason: String) -> crate::GraftError {
        crate::io::ctranslate2::Ct2Error {
            path: self.model.path().to_path_buf(),
            kind: Ct2ErrorKind::Variable { name: name.to_string(), reason },
        }
        .into()
    }

    /// Weight `name`, which must have shape `dims`.
    fn get(&self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self.model.weight(name, self.device, self.dtype)?;
        if t.dims() != dims {
            return Err(self.bad(name, format!("has shape {:?}, the network needs {dims:?}", t.dims())));
        }
        Ok(t)
    }

    /// The LayerNorm at `scope` (`gamma`, `beta`) over `d` channels.
    fn norm(&self, scope: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.get(&format!("{scope}/gamma"), &[d])?,
            bias: self.get(&format!("{scope}/beta"), &[d])?,
            eps: LAYER_NORM_EPS,
        })
    }

    /// The linear at `scope` (`[out, in]` weight, `[out]` bias) as a projection called `name`.
    fn linear(&self, scope: &str, name: String, out: usize, inp: usize) -> Result<Proj> {
        let w = self.get(&format!("{scope}/weight"), &[out, inp])?;
        let b = self.get(&format!("{scope}/bias"), &[out])?;
        Proj::new(name, BaseWeight::Dense(w), Some(b))
    }

    /// The fused linear at `scope` (`[parts·d, d]`) split into projections named
    /// `{prefix}.{part}` for each of `parts`.
    fn fused(&self, scope: &str, prefix: &str, parts: &[&str], d: usize) -> Result<Vec<Proj>> {
        self.get(&format!("{scope}/weight"), &[parts.len() * d, d])?;
        self.get(&format!("{scope}/bias"), &[parts.len() * d])?;
        let pieces = self.model.split_fused(scope, parts, self.device, self.dtype)?;
        let parent = scope.rsplit_once('/').map_or("", |(p, _)| p);
        let piece = |part: &str, field: &str| -> Result<Tensor> {
            let name = format!("{parent}/{part}/{field}");
            pieces
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| self.bad(scope, format!("no `{part}` {field} after splitting")))
        };
        parts
            .iter()
            .map(|part| {
                let (w, b) = (piece(part, "weight")?, piece(part, "bias")?);
                Proj::new(format!("{prefix}.{part}"), BaseWeight::Dense(w), Some(b))
            })
            .collect()
    }

    /// The feed-forward block at `scope` (`linear_0`, `linear_1`) named `{prefix}.fc1`, `fc2`.
    fn ffn(&self, scope: &str, prefix: &str, dims: &WhisperDims) -> Result<FeedForward> {
        let (d, f) = (dims.d_model, dims.ffn_dim);
        Ok(FeedForward {
            proj: [
                self.linear(&format!("{scope}/linear_0"), format!("{prefix}.fc1"), f, d)?,
                self.linear(&format!("{scope}/linear_1"), format!("{prefix}.fc2"), d, f)?,
            ],
        })
    }

    /// The pre-norm self-attention at `scope` (`layer_norm`, fused q/k/v `linear_0`, output
    /// `linear_1`) with its projections named `{prefix}.self_attn.{q,k,v,out}_proj`.
    fn self_attention(&self, scope: &str, prefix: &str, heads: usize, d: usize) -> Result<(LayerNorm, Attention)> {
        let name = format!("{prefix}.self_attn");
        let attn = attention(
            self.fused(&format!("{scope}/linear_0"), &name, &["q_proj", "k_proj", "v_proj"], d)?,
            self.linear(&format!("{scope}/linear_1"), format!("{name}.out_proj"), d, d)?,
            heads,
        )?;
        Ok((self.norm(&format!("{scope}/layer_norm"), d)?, attn))
    }

    /// The convolution at `scope` (`[d, in, 3]` weight, `[d]` bias).
    fn conv(&self, scope: &str, inp: usize, d: usize, stride: usize) -> Result<Conv1d> {
        Ok(Conv1d {
            weight: self.get(&format!("{scope}/weight"), &[d, inp, 3])?,
            bias: self.get(&format!("{scope}/bias"), &[d])?.reshape((1, d, 1))?,
            stride,
        })
    }
}

/// Three projections as one attention array; the caller passes exactly three.
fn attention(qkv: Vec<Proj>, out: Proj, heads: usize) -> Result<Attention> {
    let [q, k, v]: [Proj; 3] =
        qkv.try_into().map_err(|_| crate::GraftError::Input("an attention needs exactly q, k and v".into()))?;
    Ok(Attention { proj: [q, k, v, out], heads })
}

impl WeightSource for Reader<'_> {
    fn bad(&self, name: &str, reason: String) -> crate::GraftError {
        Reader::bad(self, name, reason)
    }

    fn heads_key(&self, side: Side) -> &'static str {
        match side {
            Side::Encoder => "encoder/num_heads",
            Side::Decoder => "decoder/num_heads",
        }
    }

    fn encoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<EncoderLayer> {
        let (s, p, d) = (format!("encoder/layer_{i}"), format!("encoder.layers.{i}"), dims.d_model);
        let (attn_norm, attn) = self.self_attention(&format!("{s}/self_attention"), &p, dims.encoder_heads, d)?;
        Ok(EncoderLayer {
            attn_norm,
            attn,
            ffn_norm: self.norm(&format!("{s}/ffn/layer_norm"), d)?,
            ffn: self.ffn(&format!("{s}/ffn"), &p, dims)?,
        })
    }

    fn decoder_layer(&mut self, i: usize, dims: &WhisperDims) -> Result<DecoderLayer> {
        let (s, p, d) = (format!("decoder/layer_{i}"), format!("decoder.layers.{i}"), dims.d_model);
        let ca = format!("{s}/attention");
        let cross_q = self.linear(&format!("{ca}/linear_0"), format!("{p}.encoder_attn.q_proj"), d, d)?;
        let cross_kv = self.fused(&format!("{ca}/linear_1"), &format!("{p}.encoder_attn"), &["k_proj", "v_proj"], d)?;
        let (self_norm, self_attn) = self.self_attention(&format!("{s}/self_attention"), &p, dims.decoder_heads, d)?;
        Ok(DecoderLayer {
            self_norm,
            self_attn,
            cross_norm: self.norm(&format!("{ca}/layer_norm"), d)?,
            cross_attn: attention(
                [vec![cross_q], cross_kv].concat(),
                self.linear(&format!("{ca}/linear_2"), format!("{p}.encoder_attn.out_proj"), d, d)?,
                dims.decoder_heads,
            )?,
            ffn_norm: self.norm(&format!("{s}/ffn/layer_norm"), d)?,
            ffn: self.ffn(&format!("{s}/ffn"), &p, dims)?,
        })
    }

    fn conv(&mut self, n: usize, dims: &WhisperDims) -> Result<Conv1d> {
        let inp = if n == 1 { dims.n_mels } else { dims.d_model };
        Reader::conv(self, &format!("encoder/conv{n}"), inp, dims.d_model, n)
    }

    fn positions(&mut self, side: Side, dims: &WhisperDims) -> Result<Tensor> {
        match side {
            Side::Encoder => self.get("encoder/position_encodings/encodings", &[dims.audio_ctx, dims.d_model]),
            Side::Decoder => self.get("decoder/position_encodings/encodings", &[dims.text_ctx, dims.d_model]),
        }
    }

    fn final_norm(&mut self, side: Side, dims: &WhisperDims) -> Result<LayerNorm> {
        self.norm(if side == Side::Encoder { "encoder/layer_norm" } else { "decoder/layer_norm" }, dims.d_model)
    }

    fn embeddings(&mut self, dims: &WhisperDims) -> Result<Tensor> {
        // `decoder/projection/weight` is an alias of these: the output is tied to them.
        self.get("decoder/embeddings/weight", &[dims.vocab_size, dims.d_model])
    }
}

impl Whisper {
    /// Builds the network of a CTranslate2 Whisper folder on `device`, weights and activations
    /// in `dtype` (float16 and int8 weights are converted; f32 is what parity is measured in).
    pub fn from_folder(folder: &WhisperFolder, device: &Device, dtype: DType) -> Result<Self> {
        build(&mut Reader { model: &folder.model, device, dtype }, folder.dims, device, dtype)
    }
}
