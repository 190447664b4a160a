//! File formats: GGUF, safetensors and Hugging Face model folders.

pub mod gguf;
pub mod safetensors;
pub mod hf_folder;
pub mod peft;
pub mod peft_prompt;
