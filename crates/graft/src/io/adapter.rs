//! Attaching a saved LoRA adapter to a loaded model, whichever file format holds it.

use crate::adapters::lora::LoraSet;
use crate::models::llama::Llama;
use crate::{GraftError, Result};
use std::path::Path;

/// Attaches the adapter at `path` to `model` without merging: a PEFT adapter folder
/// (`adapter_config.json` + `adapter_model.safetensors`, graft's `RUN/adapter` or one saved by
/// PEFT) or a llama.cpp LoRA adapter GGUF file (`graft export --format gguf-lora`). Target
/// modules and shapes are checked against the model before anything is attached.
pub fn load_adapter(path: &Path, model: &mut Llama) -> Result<LoraSet> {
    if path.is_dir() {
        if path.join("adapter_config.json").is_file() {
            return crate::io::peft::load_lora(path, model);
        }
        let hint = if path.join("adapter").join("adapter_config.json").is_file() {
            format!(" (a run directory? its adapter is {})", path.join("adapter").display())
        } else {
            String::new()
        };
        return Err(GraftError::model(path, format!("not an adapter folder: adapter_config.json is missing{hint}")));
    }
    if path.is_file() {
        return crate::io::gguf_lora::load_gguf_lora(path, model);
    }
    Err(GraftError::Input(format!(
        "adapter {} does not exist: pass a PEFT adapter folder (e.g. RUN/adapter) or a GGUF LoRA file",
        path.display()
    )))
}
