//! Adapters that attach to a frozen model: LoRA (on dense or quantized bases), the
//! target-pattern matching that decides where it goes, and prompt learning (soft prompts and
//! prefixes).

pub mod lora;
pub mod prompt;
pub mod targets;
