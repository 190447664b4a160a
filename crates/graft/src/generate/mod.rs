//! Sampling and KV-cached text generation.
