//! The Llama family (SmolLM2, Llama, and other GQA + RoPE + RMSNorm + gated-MLP decoders), with
//! Gemma 3 as a variant of the same decoder ([`config::Family`]).

pub(crate) mod block;
mod checkpointed;
pub mod config;
mod embedding;
pub mod expand;
pub mod model;
pub mod random;
pub mod student;
pub mod virtual_tokens;
pub mod weights;

pub use block::Block;
pub use config::{Family, Gemma3Params, LlamaConfig};
pub use expand::{BlockExpansion, ExpandedBlocks};
pub use model::{Llama, LoadOptions, Pass, SupervisedRows};
pub use student::{KeepLayers, KeptBlocks, StudentLineage};
pub use virtual_tokens::VirtualTokens;
pub use weights::{GgufWeights, SafetensorsWeights, WeightFormat, WeightSource};

use crate::io::gguf::GgufFile;
use crate::Result;

impl Llama {
    /// Loads a Llama-family model from an opened GGUF file.
    pub fn from_gguf(gguf: &GgufFile, opts: &LoadOptions) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(gguf)?;
        let src = GgufWeights::new(gguf, &cfg);
        Llama::load(cfg, &src, opts)
    }
}
