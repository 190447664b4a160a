//! Random Llama weights with a real model's shapes, for throughput runs without its file.
//!
//! Values are seeded (the same seed gives the same model): projections and embeddings are
//! uniform with standard deviation 0.02, norm weights are 1. With [`WeightFormat::Quantized`]
//! the projections are quantized to Q4_1 (the default model's projection format), so dense and
//! quantized runs exercise the same kernels as the real file.

use super::config::LlamaConfig;
use super::model::{Llama, LoadOptions};
use super::weights::{WeightFormat, WeightSource};
use crate::models::linear::BaseWeight;
use crate::{GraftError, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Standard deviation of the random projection and embedding values.
const INIT_STD: f32 = 0.02;

/// The default model's architecture at toy size: its vocabulary and numerics, 2 blocks of
/// width 64 (4 query heads and 2 key/value heads of width 16, MLP 128), context 64. Real token
/// ids of the default tokenizer run through it, and its weights are small enough for tests and
/// quick runs of whole commands.
pub fn small_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: Some(16),
        max_position_embeddings: 64,
        ..smollm2_135m_config()
    }
}

/// The shapes and numerics of SmolLM2-135M-Instruct (graft's default model), as in its GGUF.
pub fn smollm2_135m_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: Some(64),
        rope_theta: 100_000.0,
        rms_norm_eps: f64::from(1e-5f32),
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        family: Default::default(),
    }
}

/// The seed [`random_default_model`] uses.
pub const DEFAULT_INIT_SEED: u64 = 0;

/// A model with the default model's shapes ([`smollm2_135m_config`]) and seeded random dense
/// weights, on `device` in `dtype`: what throughput runs and device parity checks use when no
/// model file is at hand (or wanted). Seed [`DEFAULT_INIT_SEED`].
pub fn random_default_model(device: &Device, dtype: DType) -> Result<Llama> {
    let opts = LoadOptions { device: device.clone(), dtype, format: WeightFormat::Dense };
    random_default_model_with(&opts, DEFAULT_INIT_SEED)
}

/// [`random_default_model`] with every load option (device, dtype, dense or Q4_1-quantized
/// projections) and the seed chosen by the caller.
pub fn random_default_model_with(opts: &LoadOptions, seed: u64) -> Result<Llama> {
    let cfg = smollm2_135m_config();
    Llama::load(cfg.clone(), &RandomWeights::new(cfg, seed), opts)
}

/// A [`WeightSource`] that makes up seeded random tensors of the shapes `cfg` implies.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    cfg: LlamaConfig,
    seed: u64,
    origin: PathBuf,
}

impl RandomWeights {
    /// Random weights for a model of shape `cfg`, fixed by `seed`.
    pub fn new(cfg: LlamaConfig, seed: u64) -> Self {
        Self { cfg, seed, origin: PathBuf::from("<random-init>") }
    }

    /// The configuration the shapes come from (pass it to [`super::Llama::load`]).
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Shape of the tensor `hf_name`, or `None` when the model has no such tensor.
    fn shape_of(&self, hf_name: &str) -> Option<Vec<usize>> {
        let c = &self.cfg;
        let (h, hd, ff) = (c.hidden_size, c.head_dim(), c.intermediate_size);
        match hf_name {
            "model.embed_tokens.weight" => return Some(vec![c.vocab_size, h]),
            "model.norm.weight" => return Some(vec![h]),
            "lm_head.weight" if !c.tie_word_embeddings => return Some(vec![c.vocab_size, h]),
            _ => {}
        }
        let rest = hf_name.strip_prefix("model.layers.")?;
        let (layer, module) = rest.split_once('.')?;
        if layer.parse::<usize>().ok()? >= c.num_hidden_layers {
            return None;
        }
        let shape = match module {
            m if c.norm_modules().iter().any(|n| m.strip_suffix(".weight") == Some(n)) => {
                if m.starts_with("self_attn.") {
                    vec![hd]
                } else {
                    vec![h]
                }
            }
            "self_attn.q_proj.weight" => vec![c.num_attention_heads * hd, h],
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![c.num_key_value_heads * hd, h],
            "self_attn.o_proj.weight" => vec![h, c.num_attention_heads * hd],
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![ff, h],
            "mlp.down_proj.weight" => vec![h, ff],
            _ => return None,
        };
        Some(shape)
    }

    /// A per-tensor seed, so a tensor's values do not depend on the order tensors are asked for.
    fn tensor_seed(&self, hf_name: &str) -> u64 {
        // FNV-1a over the name, mixed with the model seed.
        hf_name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325 ^ self.seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    fn f32_tensor(&self, hf_name: &str, device: &Device) -> Result<Tensor> {
        let shape = self.shape_of(hf_name).ok_or_else(|| {
            GraftError::model(&self.origin, format!("no tensor `{hf_name}` in a Llama of this shape"))
        })?;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if hf_name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            // Uniform on [−a, a] has standard deviation a/√3.
            let a = INIT_STD * 3f32.sqrt();
            let mut rng = ChaCha8Rng::seed_from_u64(self.tensor_seed(hf_name));
            (0..n).map(|_| rng.random_range(-a..a)).collect()
        };
        Ok(Tensor::from_vec(values, shape, device)?)
    }
}

impl WeightSource for RandomWeights {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.shape_of(hf_name).is_some()
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.shape_of(hf_name)
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(self.f32_tensor(hf_name, device)?.to_dtype(dtype)?)
    }

    fn projection(&self, hf_name: &str, format: WeightFormat, dtype: DType, device: &Device) -> Result<BaseWeight> {
        let w = self.f32_tensor(hf_name, device)?;
        match format {
            WeightFormat::Dense => Ok(BaseWeight::Dense(w.to_dtype(dtype)?)),
            WeightFormat::Quantized => Ok(BaseWeight::Quantized(Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1)?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;

    fn tiny() -> LlamaConfig {
        LlamaConfig { vocab_size: 64, max_position_embeddings: 32, ..small_config() }
    }

    #[test]
    fn same_seed_same_tensor_other_seed_other_tensor() {
        let a =
            RandomWeights::new(tiny(), 1).dense("model.layers.1.mlp.up_proj.weight", DType::F32, &Device::Cpu).unwrap();
        let b =
            RandomWeights::new(tiny(), 1).dense("model.layers.1.mlp.up_proj.weight", DType::F32, &Device::Cpu).unwrap();
        let c =
            RandomWeights::new(tiny(), 2).dense("model.layers.1.mlp.up_proj.weight", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.dims(), [128, 64]);
        let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
            c.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let std = (a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((std - f64::from(INIT_STD)).abs() < 0.002, "std {std}");
    }

    #[test]
    fn random_default_model_has_the_default_shapes_and_runs() {
        let model = random_default_model(&Device::Cpu, DType::F32).unwrap();
        let info = model.info();
        assert_eq!((info.n_layers, info.vocab_size, info.max_position_embeddings), (30, 49152, 8192));
        let cfg = model.config();
        assert_eq!((cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads), (576, 9, 3));
        let ids = Tensor::new(&[[1u32, 5, 9]], &Device::Cpu).unwrap();
        let logits = model.forward_infer(&ids, &mut model.new_cache()).unwrap();
        assert_eq!(logits.dims(), [1, 3, 49152]);
        let sum = logits.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(sum.is_finite() && sum > 0.0);
    }

    #[test]
    fn loads_dense_and_quantized_models_that_run() {
        let cfg = tiny();
        for format in [WeightFormat::Dense, WeightFormat::Quantized] {
            let src = RandomWeights::new(cfg.clone(), 0);
            let opts = LoadOptions { format, ..LoadOptions::default() };
            let model = Llama::load(cfg.clone(), &src, &opts).unwrap();
            let ids = Tensor::new(&[[1u32, 5, 9]], &Device::Cpu).unwrap();
            let logits = model.forward_infer(&ids, &mut model.new_cache()).unwrap();
            assert_eq!(logits.dims(), [1, 3, 64]);
        }
        assert!(!RandomWeights::new(cfg, 0).contains("model.layers.2.mlp.up_proj.weight"));
    }
}
