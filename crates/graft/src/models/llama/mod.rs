//! The Llama family (SmolLM2, Llama, and other GQA + RoPE + RMSNorm + SiLU-MLP decoders).

mod block;
pub mod config;
pub mod model;
pub mod random;
pub mod virtual_tokens;
pub mod weights;

pub use block::Block;
pub use config::LlamaConfig;
pub use model::{Llama, LoadOptions, Pass, SupervisedRows};
pub use virtual_tokens::VirtualTokens;
pub use weights::{GgufWeights, SafetensorsWeights, WeightFormat, WeightSource};

use crate::io::gguf::GgufFile;
use crate::Result;

impl Llama {
    /// Loads a Llama-family model from an opened GGUF file.
    pub fn from_gguf(gguf: &GgufFile, opts: &LoadOptions) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(gguf)?;
        let src = GgufWeights::new(gguf, cfg.num_attention_heads, cfg.num_key_value_heads);
        Llama::load(cfg, &src, opts)
    }
}
