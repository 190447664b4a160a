//! File formats: GGUF, safetensors, Hugging Face model folders, LoRA adapters (PEFT folders and
//! llama.cpp GGUF files) and Ollama Modelfiles.

pub mod gguf;
pub mod safetensors;
pub mod hf_folder;
pub mod peft;
pub mod peft_prompt;
pub mod gguf_lora;
pub mod adapter;
pub mod modelfile;
