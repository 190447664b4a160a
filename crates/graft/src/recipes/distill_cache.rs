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
use sha2::{Digest, Sha256};
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
    /// The examples whose positions it holds, in order (empty for a shard written without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<CachedRow>,
}

/// One example's run of positions inside a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedRow {
    /// [`row_key`] of the example.
    pub key: String,
    /// Its supervised positions (consecutive in the shard).
    pub positions: usize,
}

/// The key of a token row whose supervised positions the cache holds: sha256 over its ids and
/// mask up to its last supervised position, which is everything the teacher's distributions
/// there depend on (padding after it, or the row's place in a batch, do not change it). `None`
/// when no position is supervised.
pub fn row_key(ids: &[u32], mask: &[f32]) -> Option<String> {
    let last = mask.iter().rposition(|&m| m != 0.0)?;
    let mut h = Sha256::new();
    for (id, m) in ids.iter().zip(mask).take(last + 1) {
        h.update(id.to_le_bytes());
        h.update([u8::from(*m != 0.0)]);
    }
    Some(hex::encode(h.finalize()))
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

    /// Bytes of the cache's files (shards and manifest); a missing shard is an error naming it.
    pub fn bytes(&self) -> Result<u64> {
        let files = self.manifest.shards.iter().map(|s| s.file.as_str()).chain([MANIFEST]);
        let size = |p: PathBuf| std::fs::metadata(&p).map(|m| m.len()).map_err(|_| corrupt(&p, "missing"));
        files.map(|f| size(self.dir.join(f))).sum()
    }

    /// Every shard loaded onto `device` and checked, with the index of its rows: what training
    /// looks batches up in.
    pub fn load(&self, device: &Device) -> Result<CachedRows> {
        let mut shards = Vec::with_capacity(self.manifest.shards.len());
        let mut index = HashMap::new();
        for (i, entry) in self.manifest.shards.iter().enumerate() {
            shards.push(self.shard(i, device)?);
            let mut start = 0;
            for row in &entry.rows {
                index.entry(row.key.clone()).or_insert((i, start, row.positions));
                start += row.positions;
            }
        }
        let k = shards.first().map(|s| s.dims()).transpose()?.map_or(0, |d| d.1);
        Ok(CachedRows { shards, index, k })
    }
}

/// A loaded cache: the sparse teacher of any token row it holds.
#[derive(Debug)]
pub struct CachedRows {
    shards: Vec<SparseTeacher>,
    /// Row key → (shard, first position, positions).
    index: HashMap<String, (usize, usize, usize)>,
    k: usize,
}

impl CachedRows {
    /// Ids kept per position.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The cached teacher at the supervised positions of `ids` / `mask` (`[b, t]` each, the rows
    /// of a batch), in row-major order as [`crate::models::llama::SupervisedRows`] selects them;
    /// `None` when no position is supervised. A row the cache does not hold is an error.
    pub fn for_batch(&self, ids: &Tensor, mask: &Tensor) -> Result<Option<SparseTeacher>> {
        let ids: Vec<Vec<u32>> = ids.to_vec2()?;
        let mask: Vec<Vec<f32>> = mask.to_dtype(DType::F32)?.to_vec2()?;
        let mut parts = Vec::new();
        for (row_ids, row_mask) in ids.iter().zip(&mask) {
            let Some(key) = row_key(row_ids, row_mask) else { continue };
            let &(shard, start, len) = self.index.get(&key).ok_or_else(|| {
                GraftError::Input(
                    "a training example is not in the teacher cache (the training data or its tokenization \
                     differs from what the cache was filled from); delete the cache folder to rebuild it"
                        .into(),
                )
            })?;
            let want = row_mask.iter().filter(|&&m| m != 0.0).count();
            if want != len {
                return Err(GraftError::Input(format!(
                    "teacher cache: an example has {want} supervised positions but the cache holds {len}"
                )));
            }
            parts.push(self.shards[shard].narrow(start, len)?);
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let cat = |f: fn(&SparseTeacher) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        Ok(Some(SparseTeacher { ids: cat(|p| &p.ids)?, log_probs: cat(|p| &p.log_probs)?, rest: cat(|p| &p.rest)? }))
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
        self.push_rows(sparse, Vec::new())
    }

    /// [`CacheWriter::push`], recording which examples' positions the shard holds, in order (their
    /// positions must add up to the shard's).
    pub fn push_rows(&mut self, sparse: &SparseTeacher, rows: Vec<CachedRow>) -> Result<()> {
        let n = sparse.dims()?.0;
        if !rows.is_empty() && rows.iter().map(|r| r.positions).sum::<usize>() != n {
            return Err(GraftError::Input(format!(
                "internal: teacher cache shard of {n} positions with other row counts"
            )));
        }
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        let path = self.dir.join(&file);
        let tensors = [
            ("ids".to_string(), sparse.ids.to_dtype(DType::U32)?.contiguous()?),
            ("log_probs".to_string(), sparse.log_probs.to_dtype(DType::F32)?.contiguous()?),
            ("rest".to_string(), sparse.rest.to_dtype(DType::F32)?.contiguous()?),
        ];
        crate::io::safetensors::save_atomic(tensors, &path)?;
        let (sha256, _) = hash_file(&path)?;
        self.shards.push(ShardEntry { file, positions: n, sha256, rows });
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

#[cfg(test)]
mod tests {
    use super::row_key;

    #[test]
    fn a_row_key_ignores_what_follows_the_last_supervised_position() {
        let key = row_key(&[5, 6, 7, 8], &[0.0, 1.0, 1.0, 0.0]).unwrap();
        assert_eq!(row_key(&[5, 6, 7, 0, 0, 0], &[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]).unwrap(), key, "padding");
        assert_ne!(row_key(&[4, 6, 7, 8], &[0.0, 1.0, 1.0, 0.0]).unwrap(), key, "an earlier token");
        assert_ne!(row_key(&[5, 6, 7, 8], &[1.0, 1.0, 1.0, 0.0]).unwrap(), key, "the mask");
        assert_eq!(row_key(&[5, 6], &[0.0, 0.0]), None);
    }
}
