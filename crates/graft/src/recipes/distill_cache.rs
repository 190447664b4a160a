//! The teacher cache on disk: [`SparseTeacher`] shards (safetensors, each written atomically)
//! under a folder, and a `manifest.json` written last that lists them with their sha256 and holds
//! the fingerprint of what decided them (teacher, adapter, data, tokenization settings, `k`, `T`).
//! A folder without a manifest is an unfinished cache; a manifest whose fingerprint differs from
//! the wanted one is refused with every differing key; a missing or altered shard is an error
//! naming the file.

use crate::assets::cache::hash_file;
use crate::ops::SparseTeacher;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The manifest's file name inside a cache folder.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What decided the cached values (compared key by key on reuse).
    pub fingerprint: Value,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
}

/// One shard of a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name inside the cache folder.
    pub file: String,
    /// Positions it holds.
    pub positions: usize,
    /// sha256 of the file.
    pub sha256: String,
}

/// A finished cache, opened for reading.
#[derive(Debug, Clone)]
pub struct TeacherCache {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The keys (dotted paths) where `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                differences(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &sub, out);
            }
        }
        _ if a != b => out.push(format!("{path}: cached {a}, now {b}")),
        _ => {}
    }
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> GraftError {
    GraftError::Input(format!("teacher cache shard {}: {why}; delete the cache folder to rebuild it", path.display()))
}

impl TeacherCache {
    /// The finished cache in `dir` made for `fingerprint`; `None` when `dir` holds no manifest
    /// (nothing cached yet, or an unfinished cache). A cache made for another fingerprint is an
    /// error listing what differs.
    pub fn open(dir: &Path, fingerprint: &Value) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| GraftError::Input(format!("teacher cache manifest {}: {e}", path.display())))?;
        let mut diff = Vec::new();
        differences(&manifest.fingerprint, fingerprint, "", &mut diff);
        if !diff.is_empty() {
            return Err(GraftError::Input(format!(
                "the teacher cache in {} is stale (made for other settings): {}; delete it or point \
                 distill.teacher_cache elsewhere",
                dir.display(),
                diff.join("; ")
            )));
        }
        Ok(Some(Self { dir: dir.to_path_buf(), manifest }))
    }

    /// Shard `i`, checked against the manifest (present, same sha256, consistent tensors).
    pub fn shard(&self, i: usize, device: &Device) -> Result<SparseTeacher> {
        let entry = self.manifest.shards.get(i).ok_or_else(|| {
            GraftError::Input(format!("teacher cache: no shard {i} (it has {})", self.manifest.shards.len()))
        })?;
        let path = self.dir.join(&entry.file);
        if !path.is_file() {
            return Err(corrupt(&path, "missing"));
        }
        let (sha, _) = hash_file(&path)?;
        if sha != entry.sha256 {
            return Err(corrupt(&path, format!("sha256 {sha}, the manifest says {}", entry.sha256)));
        }
        let mut map = candle_core::safetensors::load(&path, device).map_err(|e| corrupt(&path, e))?;
        let mut take = |name: &str| map.remove(name).ok_or_else(|| corrupt(&path, format!("no tensor `{name}`")));
        let (ids, log_probs, rest) = (take("ids")?, take("log_probs")?, take("rest")?);
        let sparse = SparseTeacher { ids, log_probs, rest };
        let ok = sparse.ids.dtype() == DType::U32
            && sparse.ids.dims2().ok().map(|d| d.0) == Some(entry.positions)
            && sparse.log_probs.dims() == sparse.ids.dims()
            && sparse.rest.dims() == [entry.positions];
        if !ok {
            return Err(corrupt(&path, "tensor shapes or types do not match the manifest"));
        }
        Ok(sparse)
    }
}

/// Writes a cache: shards one at a time, then the manifest.
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    fingerprint: Value,
    shards: Vec<ShardEntry>,
}

impl CacheWriter {
    /// A writer into `dir` (created) for `fingerprint`; an existing manifest there is removed
    /// first, so an interrupted rewrite never looks finished.
    pub fn create(dir: &Path, fingerprint: Value) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
        let manifest = dir.join(MANIFEST);
        if manifest.exists() {
            std::fs::remove_file(&manifest).map_err(|e| GraftError::io(&manifest, e))?;
        }
        Ok(Self { dir: dir.to_path_buf(), fingerprint, shards: Vec::new() })
    }

    /// Writes the next shard (ids as u32, values as f32) atomically.
    pub fn push(&mut self, sparse: &SparseTeacher) -> Result<()> {
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        let path = self.dir.join(&file);
        let map: HashMap<String, Tensor> = [
            ("ids".to_string(), sparse.ids.to_dtype(DType::U32)?.contiguous()?),
            ("log_probs".to_string(), sparse.log_probs.to_dtype(DType::F32)?.contiguous()?),
            ("rest".to_string(), sparse.rest.to_dtype(DType::F32)?.contiguous()?),
        ]
        .into_iter()
        .collect();
        let tmp = tempfile::Builder::new()
            .prefix(".shard")
            .suffix(".safetensors")
            .tempfile_in(&self.dir)
            .map_err(|e| GraftError::io(&self.dir, e))?;
        candle_core::safetensors::save(&map, tmp.path())?;
        tmp.as_file().sync_all().map_err(|e| GraftError::io(&path, e))?;
        tmp.persist(&path).map_err(|e| GraftError::io(&path, e.error))?;
        let (sha256, _) = hash_file(&path)?;
        self.shards.push(ShardEntry { file, positions: sparse.dims()?.0, sha256 });
        Ok(())
    }

    /// Writes the manifest (atomically) and opens the finished cache.
    pub fn finish(self) -> Result<TeacherCache> {
        let manifest = Manifest { fingerprint: self.fingerprint, shards: self.shards };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| GraftError::Input(format!("teacher cache manifest: {e}")))?;
        crate::io::write_atomic(&self.dir.join(MANIFEST), &text)?;
        crate::io::sync_dir(&self.dir).map_err(|e| GraftError::io(&self.dir, e))?;
        Ok(TeacherCache { dir: self.dir, manifest })
    }
}
