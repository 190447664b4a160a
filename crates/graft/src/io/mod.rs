//! File formats: GGUF, safetensors, Hugging Face model folders, LoRA adapters (PEFT folders and
//! llama.cpp GGUF files), Ollama Modelfiles and R data files (`rdata`).

pub mod adapter;
pub mod gguf;
pub mod gguf_lora;
pub mod hf_folder;
pub mod modelfile;
pub mod peft;
pub mod peft_prompt;
pub mod rdata;
pub mod safetensors;

/// Makes the renames in `dir` durable (fsync of the folder). Off Unix a folder cannot be opened
/// for syncing; each rename is still atomic there.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}
