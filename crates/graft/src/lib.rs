//! graft: transfer learning with pretrained generative models.
//!
//! The crate is organised so that dependencies point one way:
//! `recipes -> {train, objectives, eval, data, adapters} -> models -> io -> candle`.
//!
//! - [`assets`]: named pretrained models and datasets, fetched through package registries into a
//!   checksummed cache.
//! - [`io`]: file formats — GGUF (validated reading), safetensors, Hugging Face model folders,
//!   PEFT and GGUF LoRA adapters, Ollama Modelfiles, PyTorch checkpoints.
//! - [`tokenizer`]: tokenizers built from GGUF metadata or `tokenizer.json`, and chat templates.
//! - [`models`]: model families behind the [`models::Model`] trait; every projection is an
//!   adaptable [`models::linear::Proj`].
//! - [`vision`]: images in (IDX, the MNIST-5k CSV, PNG / JPEG) and their preprocessing into a
//!   `[N, 3, H, W]` tensor.
//! - [`speech`]: audio in (WAV files, resampling to 16 kHz) and Whisper's log-mel front end.
//! - [`generate`]: sampling and KV-cached text generation.
//! - [`eval`]: evaluation protocols (perplexity, ...).
//! - [`bench`](mod@bench): throughput measurements reported by `graft bench`.
//! - [`adapters`]: LoRA (dense or quantized base) and PEFT-style target matching.
//! - [`train`]: the one training loop ([`train::Trainer`]), the objective seam, optimizers with
//!   parameter groups and savable state, schedules, checkpoints.
//! - [`meta`]: meta-learning — few-shot episodes over a dataset's classes.
//! - [`multitask`]: task samplers, loss weightings and PCGrad for training on several tasks.
//! - [`objectives`]: what techniques train for (causal LM, classification heads).
//! - [`datasets`]: readers for the named datasets recipes use (tweets, ...).
//! - [`config`]: the TOML schema of `graft train`.
//! - [`data`]: JSONL fine-tuning data in four formats, supervision masks, batches.
//! - [`recipes`]: one function per technique (fine-tune, quickstart, export, compare).
//! - [`prompting`]: zero-shot and k-shot prompt templates and label scoring through them.
//! - [`report`]: technique comparison results and their Markdown / JSON / HTML renderings.
//! - [`features`]: frozen-backbone features and the classification heads trained on them.
//! - [`device`]: choosing the candle `Device` and dtype.
//! - [`parity`]: the same computations on two devices or dtypes, compared (GPU checks).

pub mod adapters;
pub mod assets;
pub mod bench;
pub mod config;
pub mod continual;
pub mod data;
pub mod datasets;
pub mod device;
pub mod domain_adapt;
pub mod error;
pub mod eval;
pub mod features;
pub mod games;
pub mod generate;
pub mod io;
pub mod meta;
pub mod models;
pub mod multitask;
pub mod objectives;
pub mod ops;
pub mod parity;
pub mod prompting;
pub mod recipes;
pub mod report;
pub mod speech;
pub mod tokenizer;
pub mod train;
pub mod vision;

pub use error::{GraftError, Result};
