//! Adapters that attach to a frozen model: LoRA (on dense or quantized bases) and the
//! target-pattern matching that decides where they go.

pub mod lora;
pub mod targets;
