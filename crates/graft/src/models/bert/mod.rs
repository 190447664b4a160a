//! The BERT encoder family (BERT, MiniLM and other `model_type: "bert"` checkpoints) and
//! sentence embeddings built on it.
//!
//! ```text
//! config.json ─▶ BertConfig ─┐
//! *.safetensors ─▶ BertWeights ─┴▶ Bert::forward ─▶ last_hidden_state ─▶ mean_pool ─▶ l2_normalize
//! tokenizer.json ─▶ SentenceEncoder::tokenize ([CLS] … [SEP], truncated) ─▶ BertInput (padded + mask)
//! ```
//!
//! Every projection is an adaptable [`crate::models::linear::Proj`] named as in the checkpoint
//! (`encoder.layer.3.attention.self.query`), so adapters attach by name; the training path
//! ([`Pass::Train`]) uses only operations with a backward, and [`Bert::unfreeze_top_layers`] turns
//! the top blocks into variables for feature extraction with partial fine-tuning. See
//! docs/encoders.md.

pub mod config;
pub mod dropout;
pub mod encoder;
pub mod mlm_head;
pub mod model;
pub mod weights;

pub use crate::models::llama::Pass;
pub use config::BertConfig;
pub use dropout::Dropout;
pub use encoder::{l2_normalize, mean_pool, Embeddings, SentenceEncoder, Tokenized};
pub use mlm_head::MlmHead;
pub use model::{Bert, BertInput, BertLayer};
pub use weights::BertWeights;
