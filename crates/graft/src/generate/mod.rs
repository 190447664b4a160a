//! Sampling and KV-cached text generation.
//!
//! - [`sampler`]: logits processors in transformers' order and the seeded [`Sampler`].
//! - [`generator`]: the id-level loop [`generate`] (prefill, then one token per forward).
//! - [`stream`]: incremental detokenization that only hands out complete characters.
//! - [`stop`]: stop strings and how much text to hold back while streaming.
//! - [`text`]: [`generate_text`], the loop above with streaming text and stop strings.

pub mod generator;
pub mod sampler;
pub mod stop;
pub mod stream;
pub mod text;

pub use generator::{check_prompt, generate, GenerateOptions, Generation, StopReason};
pub use sampler::{stream_seed, Sampler, SamplingConfig};
pub use stop::StopStrings;
pub use stream::{Detokenizer, IncrementalDecoder};
pub use text::{generate_text, TextGeneration};

#[cfg(test)]
mod tests;
