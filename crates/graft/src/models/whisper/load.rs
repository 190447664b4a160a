//! Building the Whisper network from a CTranslate2 `WhisperSpec` folder: variables renamed to
//! Hugging Face's module names, fused projections split, every shape checked against the sizes
//! the folder declares before it is used.

use super::layers::{Attention, DecoderLayer, EncoderLayer, FeedForward};
use super::model::{Conv1d, Whisper, WhisperDecoder, WhisperEncoder};
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

impl Whisper {
    /// Builds the network of a CTranslate2 Whisper folder on `device`, weights and activations
    /// in `dtype` (float16 and int8 weights are converted; f32 is what parity is measured in).
    pub fn from_folder(folder: &WhisperFolder, device: &Device, dtype: DType) -> Result<Self> {
        let dims = folder.dims;
        let r = Reader { model: &folder.model, device, dtype };
        let d = dims.d_model;
        for (name, heads) in [("encoder/num_heads", dims.encoder_heads), ("decoder/num_heads", dims.decoder_heads)] {
            if !d.is_multiple_of(heads) {
                return Err(r.bad(name, format!("{heads} heads do not divide the width {d}")));
            }
        }
        let mut enc_layers = Vec::with_capacity(dims.encoder_layers);
        for i in 0..dims.encoder_layers {
            let (s, p) = (format!("encoder/layer_{i}"), format!("encoder.layers.{i}"));
            let (attn_norm, attn) = r.self_attention(&format!("{s}/self_attention"), &p, dims.encoder_heads, d)?;
            enc_layers.push(EncoderLayer {
                attn_norm,
                attn,
                ffn_norm: r.norm(&format!("{s}/ffn/layer_norm"), d)?,
                ffn: r.ffn(&format!("{s}/ffn"), &p, &dims)?,
            });
        }
        let encoder = WhisperEncoder {
            conv1: r.conv("encoder/conv1", dims.n_mels, d, 1)?,
            conv2: r.conv("encoder/conv2", d, d, 2)?,
            positions: r.get("encoder/position_encodings/encodings", &[dims.audio_ctx, d])?,
            layers: enc_layers,
            norm: r.norm("encoder/layer_norm", d)?,
        };
        let mut dec_layers = Vec::with_capacity(dims.decoder_layers);
        for i in 0..dims.decoder_layers {
            let (s, p) = (format!("decoder/layer_{i}"), format!("decoder.layers.{i}"));
            let ca = format!("{s}/attention");
            let cross_q = r.linear(&format!("{ca}/linear_0"), format!("{p}.encoder_attn.q_proj"), d, d)?;
            let cross_kv =
                r.fused(&format!("{ca}/linear_1"), &format!("{p}.encoder_attn"), &["k_proj", "v_proj"], d)?;
            let (self_norm, self_attn) = r.self_attention(&format!("{s}/self_attention"), &p, dims.decoder_heads, d)?;
            dec_layers.push(DecoderLayer {
                self_norm,
                self_attn,
                cross_norm: r.norm(&format!("{ca}/layer_norm"), d)?,
                cross_attn: attention(
                    [vec![cross_q], cross_kv].concat(),
                    r.linear(&format!("{ca}/linear_2"), format!("{p}.encoder_attn.out_proj"), d, d)?,
                    dims.decoder_heads,
                )?,
                ffn_norm: r.norm(&format!("{s}/ffn/layer_norm"), d)?,
                ffn: r.ffn(&format!("{s}/ffn"), &p, &dims)?,
            });
        }
        let embeddings = r.get("decoder/embeddings/weight", &[dims.vocab_size, d])?;
        // The output projection is tied to the token embeddings (`decoder/projection/weight` is
        // an alias of `decoder/embeddings/weight`): the same tensor serves both.
        let proj_out = Proj::new("proj_out", BaseWeight::Dense(embeddings.clone()), None)?;
        let decoder = WhisperDecoder {
            embeddings,
            positions: r.get("decoder/position_encodings/encodings", &[dims.text_ctx, d])?,
            layers: dec_layers,
            norm: r.norm("decoder/layer_norm", d)?,
            proj_out,
        };
        Ok(Whisper { dims, encoder, decoder, device: device.clone(), dtype })
    }
}
