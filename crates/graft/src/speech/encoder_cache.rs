//! A disk cache of Whisper encoder states, so runs that freeze the encoder (decoder LoRA, sweeps
//! over rank or learning rate, one run per language scored on the same held-out clips) encode
//! each clip once.
//!
//! An entry is keyed by sha256 over the model's identity — its folder's canonical path, the
//! size and modification time of `model.bin`, the device and the dtype — and the audio file's
//! bytes: a changed model or clip never reads a stale entry. Entries are safetensors files
//! (`states`, `[1, frames, d]`) written atomically, so a killed run leaves no half entry.

use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Encoder states of one model, on disk under one folder.
#[derive(Debug, Clone)]
pub struct EncoderCache {
    dir: PathBuf,
    model_key: Vec<u8>,
    device: Device,
}

impl EncoderCache {
    /// The cache in `dir` (created if missing) for the Whisper folder `model_dir` run on `device`
    /// in `dtype`.
    pub fn open(dir: &Path, model_dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
        let canonical = model_dir.canonicalize().map_err(|e| GraftError::io(model_dir, e))?;
        let bin = canonical.join("model.bin");
        let meta = std::fs::metadata(&bin).map_err(|e| GraftError::io(&bin, e))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let mut h = Sha256::new();
        h.update(canonical.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
        h.update(format!("{device:?}/{dtype:?}").as_bytes());
        Ok(Self { dir: dir.to_path_buf(), model_key: h.finalize().to_vec(), device: device.clone() })
    }

    /// The entry file of the audio file `audio`.
    fn entry(&self, audio: &Path) -> Result<PathBuf> {
        let bytes = std::fs::read(audio).map_err(|e| GraftError::io(audio, e))?;
        let mut h = Sha256::new();
        h.update(&self.model_key);
        h.update(Sha256::digest(&bytes));
        let key = hex::encode(h.finalize());
        Ok(self.dir.join(&key[..2]).join(format!("{key}.safetensors")))
    }

    /// The states of `audio` from the cache, or computed by `compute` and stored; the flag says
    /// whether they came from the cache.
    pub fn get_or_compute(&self, audio: &Path, compute: impl FnOnce() -> Result<Tensor>) -> Result<(Tensor, bool)> {
        let path = self.entry(audio)?;
        if path.is_file() {
            let mut tensors = candle_core::safetensors::load(&path, &self.device)
                .map_err(|e| GraftError::model(&path, format!("unreadable encoder cache entry: {e}")))?;
            if let Some(states) = tensors.remove("states") {
                return Ok((states, true));
            }
        }
        let states = compute()?;
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".entry-")
            .suffix(".safetensors")
            .tempfile_in(parent)
            .map_err(|e| GraftError::io(parent, e))?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("states", states.contiguous()?)]),
            tmp.path(),
        )?;
        tmp.persist(&path).map_err(|e| GraftError::io(&path, e.error))?;
        Ok((states, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_then_reads_and_keys_on_the_audio_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("model.bin"), b"weights").unwrap();
        let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
        std::fs::write(&a, b"first clip").unwrap();
        std::fs::write(&b, b"second clip").unwrap();
        let cache = EncoderCache::open(&dir.path().join("cache"), &model, &Device::Cpu, DType::F32).unwrap();
        let states = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0]]], &Device::Cpu).unwrap();
        let (_, hit) = cache.get_or_compute(&a, || Ok(states.clone())).unwrap();
        assert!(!hit);
        let (read, hit) = cache.get_or_compute(&a, || panic!("must come from the cache")).unwrap();
        assert!(hit);
        assert_eq!(read.to_vec3::<f32>().unwrap(), states.to_vec3::<f32>().unwrap());
        let (_, hit) = cache.get_or_compute(&b, || Ok(states.clone())).unwrap();
        assert!(!hit, "another clip is another entry");
        // Another dtype is another model identity.
        let other = EncoderCache::open(&dir.path().join("cache"), &model, &Device::Cpu, DType::F64).unwrap();
        let (_, hit) = other.get_or_compute(&a, || Ok(states.clone())).unwrap();
        assert!(!hit);
    }
}
