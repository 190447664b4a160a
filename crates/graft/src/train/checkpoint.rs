//! Checkpoints that survive crashes: trainable weights, optimizer state and loop state, written
//! to a temporary folder, fsynced, checksummed and renamed into place; `LATEST` changes only by
//! an atomic rename afterwards. Loading verifies every checksum and falls back to the previous
//! complete checkpoint when the newest one is damaged.

use crate::{GraftError, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the training loop stood when a checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Micro-batches consumed since the start (the data cursor: epoch and position follow).
    pub micro_batches_done: u64,
    /// Loss tokens seen so far.
    pub tokens_seen: u64,
    /// The resolved config of the run, as TOML.
    pub config_toml: String,
    /// Evaluation loss of the base model (measured once at the start).
    pub base_eval_loss: Option<f64>,
    /// Seconds spent training before this checkpoint.
    pub elapsed_s: f64,
}

impl LoopState {
    /// The state before the first step of a run with the given settings.
    pub fn start(config_toml: String) -> Self {
        Self { step: 0, micro_batches_done: 0, tokens_seen: 0, config_toml, base_eval_loss: None, elapsed_s: 0.0 }
    }
}

/// A verified checkpoint read back from disk.
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Trainable tensors by name.
    pub weights: HashMap<String, Tensor>,
    /// Optimizer state by name.
    pub optimizer: HashMap<String, Tensor>,
    /// Loop state.
    pub state: LoopState,
}

const FILES: [&str; 3] = ["weights.safetensors", "optimizer.safetensors", "state.json"];

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| GraftError::io(path, e))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    io(dir, crate::io::sync_dir(dir))
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = io(path, std::fs::read(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes a checkpoint for `state.step` under `run_dir/checkpoints/` and points `LATEST` at it;
/// keeps the newest `keep` complete checkpoints.
pub fn save(
    run_dir: &Path,
    weights: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    state: &LoopState,
    keep: usize,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    io(&root, std::fs::create_dir_all(&root))?;
    let name = format!("step-{:08}", state.step);
    clear_staging(&root)?;
    let tmp = root.join(format!("{name}.tmp"));
    io(&tmp, std::fs::create_dir_all(&tmp))?;
    let save_st = |file: &str, tensors: &[(String, Tensor)]| -> Result<()> {
        let map: HashMap<String, Tensor> = tensors.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
        let path = tmp.join(file);
        candle_core::safetensors::save(&map, &path)?;
        io(&path, File::open(&path).and_then(|f| f.sync_all()))
    };
    save_st(FILES[0], weights)?;
    save_st(FILES[1], optimizer)?;
    let state_path = tmp.join(FILES[2]);
    write_synced(&state_path, serde_json::to_string_pretty(state)?.as_bytes())?;
    let mut manifest = serde_json::Map::new();
    for f in FILES {
        manifest.insert(f.into(), sha256_file(&tmp.join(f))?.into());
    }
    write_synced(&tmp.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    fsync_dir(&tmp)?;
    let dest = root.join(&name);
    if dest.exists() {
        // A folder of this step left by a run killed before it moved `LATEST`: renamed out of
        // the way first, so a kill during the removal leaves staging, never a half-deleted
        // checkpoint.
        let old = root.join(format!("{name}.old.tmp"));
        io(&dest, std::fs::rename(&dest, &old))?;
        io(&old, std::fs::remove_dir_all(&old))?;
    }
    io(&dest, std::fs::rename(&tmp, &dest))?;
    fsync_dir(&root)?;
    let latest_tmp = root.join("LATEST.tmp");
    write_synced(&latest_tmp, name.as_bytes())?;
    io(&root, std::fs::rename(&latest_tmp, root.join("LATEST")))?;
    fsync_dir(&root)?;
    prune(&root, keep, &dest)?;
    Ok(dest)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = io(path, File::create(path))?;
    io(path, f.write_all(bytes))?;
    io(path, f.sync_all())
}

/// Complete checkpoint folders, newest first.
fn complete(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
                    && p.join("manifest.json").is_file()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    dirs.reverse();
    Ok(dirs)
}

/// Removes the staging folders (`step-*.tmp`) that killed saves left behind.
fn clear_staging(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(()) };
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let staging =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-") && n.ends_with(".tmp"));
        if staging && p.is_dir() {
            io(&p, std::fs::remove_dir_all(&p))?;
        }
    }
    Ok(())
}

/// Keeps `current` (the one `LATEST` names) and the newest others up to `keep` in all.
fn prune(root: &Path, keep: usize, current: &Path) -> Result<()> {
    let others = complete(root)?.into_iter().filter(|d| d != current);
    for old in others.skip(keep.max(1) - 1) {
        io(&old, std::fs::remove_dir_all(&old))?;
    }
    Ok(())
}

/// A [`GraftError::Checkpoint`] for the checkpoint (or run directory) `path`.
pub fn damaged(path: &Path, reason: impl Into<String>) -> GraftError {
    GraftError::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads one checkpoint folder, verifying every file against its manifest. Any failure
/// (a missing or damaged file) is a [`GraftError::Checkpoint`] naming the folder.
pub fn load_dir(dir: &Path, device: &Device) -> Result<Checkpoint> {
    read_verified(dir, device).map_err(|e| match e {
        GraftError::Checkpoint { .. } => e,
        other => damaged(dir, other.to_string()),
    })
}

fn read_verified(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let manifest_path = dir.join("manifest.json");
    let text = io(&manifest_path, std::fs::read_to_string(&manifest_path))?;
    let manifest: HashMap<String, String> = serde_json::from_str(&text)?;
    for f in FILES {
        let want = manifest.get(f).ok_or_else(|| damaged(dir, format!("manifest lacks {f}")))?;
        let got = sha256_file(&dir.join(f))?;
        if &got != want {
            return Err(damaged(
                dir,
                format!("{f}: checksum mismatch (expected {want}, found {got}); the file is damaged"),
            ));
        }
    }
    let weights = candle_core::safetensors::load(dir.join(FILES[0]), device)?;
    let optimizer = candle_core::safetensors::load(dir.join(FILES[1]), device)?;
    let state: LoopState = serde_json::from_str(&io(dir, std::fs::read_to_string(dir.join(FILES[2])))?)?;
    Ok(Checkpoint { dir: dir.to_path_buf(), weights, optimizer, state })
}

/// Verifies, strictly, every checkpoint of `run_dir`: the one `LATEST` names (which must
/// exist) and every other complete folder. Returns each folder with its step, `LATEST`'s first.
/// Unlike [`load_latest`] nothing is skipped: the first damaged checkpoint is the error. A run
/// killed before its first `LATEST` was written may have complete folders and no `LATEST`.
pub fn verify_all(run_dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let root = run_dir.join("checkpoints");
    let mut dirs = Vec::new();
    let latest = root.join("LATEST");
    if latest.exists() {
        let name = io(&latest, std::fs::read_to_string(&latest))?;
        let dir = root.join(name.trim());
        if !dir.is_dir() {
            return Err(damaged(&dir, "LATEST names it but it does not exist"));
        }
        dirs.push(dir);
    }
    for dir in complete(&root)? {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    if dirs.is_empty() {
        return Err(damaged(run_dir, "the run has no complete checkpoint"));
    }
    dirs.into_iter().map(|d| load_dir(&d, &Device::Cpu).map(|c| (d, c.state.step))).collect()
}

/// The newest checkpoint of `run_dir` that verifies; damaged ones are reported with `warn` and
/// skipped. `None` when the run has no complete checkpoint.
pub fn load_latest(run_dir: &Path, device: &Device, mut warn: impl FnMut(String)) -> Result<Option<Checkpoint>> {
    let root = run_dir.join("checkpoints");
    let mut candidates = Vec::new();
    if let Ok(name) = std::fs::read_to_string(root.join("LATEST")) {
        candidates.push(root.join(name.trim()));
    }
    candidates.extend(complete(&root)?);
    let mut seen = std::collections::HashSet::new();
    for dir in candidates {
        if !seen.insert(dir.clone()) || !dir.is_dir() {
            continue;
        }
        match load_dir(&dir, device) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => warn(format!("skipping damaged checkpoint {}: {e}", dir.display())),
        }
    }
    Ok(None)
}
