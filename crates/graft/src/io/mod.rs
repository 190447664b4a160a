//! File formats: GGUF, safetensors, Hugging Face model folders, LoRA adapters (PEFT folders and
//! llama.cpp GGUF files), Ollama Modelfiles, R data files (`rdata`), PyTorch checkpoints
//! (`torch`: legacy and zip `torch.save` files, read without executing their pickles) and
//! CTranslate2 models (`ctranslate2`: `model.bin` and Whisper folders).

pub mod adapter;
pub mod ctranslate2;
pub mod gguf;
pub mod gguf_lora;
pub mod hf_folder;
pub mod modelfile;
pub mod peft;
pub mod peft_prompt;
pub mod rdata;
pub mod safetensors;
pub mod torch;

/// Makes the renames in `dir` durable (fsync of the folder). Off Unix a folder cannot be opened
/// for syncing; each rename is still atomic there.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// Writes `text` to `path` through a temporary file in the same folder, synced and made
/// world-readable, then renamed over `path`: a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &std::path::Path, text: &str) -> crate::Result<()> {
    write_atomic_bytes(path, text.as_bytes())
}

/// [`write_atomic`] for any bytes (images, binary files).
pub fn write_atomic_bytes(path: &std::path::Path, bytes: &[u8]) -> crate::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| crate::GraftError::io(dir, e))?;
    use std::io::Write;
    tmp.write_all(bytes).map_err(|e| crate::GraftError::io(path, e))?;
    // Temporary files are private (0600); the files written here are meant to be read by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| crate::GraftError::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| crate::GraftError::io(path, e))?;
    tmp.persist(path).map_err(|e| crate::GraftError::io(path, e.error))?;
    Ok(())
}
