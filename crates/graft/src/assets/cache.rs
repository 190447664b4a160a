//! The on-disk cache: per-asset folders, the `.sha256` marker that makes re-runs cheap, the
//! per-asset lock and the atomic install by rename.
//!
//! Layout under the cache root:
//! - `models/<name>/`, `datasets/<name>/`: installed assets, each with a `.sha256` marker;
//! - `.locks/<name>.lock`: held (exclusive `flock`) while an asset is checked or fetched;
//! - `.tmp/<name>.XXXX/`: work folders of fetches in progress, removed on success or failure.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::spec::AssetSpec;
use crate::{GraftError, Result};

/// File name of the marker written next to an installed asset's files.
pub const MARKER: &str = ".sha256";

/// How much of an asset the cache holds, judged without hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Every file is present with the size recorded in a marker that pins the spec's digests.
    Verified,
    /// Every file is present but no matching marker vouches for it (it will be hashed once).
    Unverified,
    /// At least one file is missing.
    Missing,
}

impl CacheState {
    /// Lower-case word for listings and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Verified => "verified",
            CacheState::Unverified => "unverified",
            CacheState::Missing => "missing",
        }
    }
}

/// Judges what `cache` holds of `spec` from the marker and file sizes only.
pub fn state_in(cache: &Path, spec: &AssetSpec) -> CacheState {
    let dir = spec.dir_in(cache);
    if marker_matches(&dir, spec) {
        CacheState::Verified
    } else if spec.files.iter().all(|f| dir.join(f.dest).is_file()) {
        CacheState::Unverified
    } else {
        CacheState::Missing
    }
}

/// True when `dir/.sha256` lists exactly the spec's files with the spec's digests and every
/// file still has the recorded size: the cheap check that lets re-runs skip hashing.
pub(crate) fn marker_matches(dir: &Path, spec: &AssetSpec) -> bool {
    let Ok(file) = File::open(dir.join(MARKER)) else {
        return false;
    };
    let mut seen = 0usize;
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { return false };
        if line.trim().is_empty() {
            continue;
        }
        let Some((sha, size, dest)) = parse_marker_line(&line) else {
            return false;
        };
        let Some(out) = spec.files.iter().find(|f| f.dest == dest) else {
            return false;
        };
        if out.sha256 != sha {
            return false;
        }
        match fs::metadata(dir.join(dest)) {
            Ok(meta) if meta.is_file() && meta.len() == size => seen += 1,
            _ => return false,
        }
    }
    seen == spec.files.len()
}

/// Splits a marker line `<sha256> <size> <dest>`.
fn parse_marker_line(line: &str) -> Option<(&str, u64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let sha = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    let dest = parts.next()?;
    Some((sha, size, dest))
}

/// One verified file, as recorded in the marker.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub dest: String,
    pub sha256: String,
    pub size: u64,
}

/// Writes `dir/.sha256` atomically (temporary file, then rename).
pub(crate) fn write_marker(dir: &Path, files: &[Verified]) -> Result<()> {
    let tmp = dir.join(".sha256.tmp");
    let body: String = files.iter().map(|f| format!("{} {} {}\n", f.sha256, f.size, f.dest)).collect();
    fs::write(&tmp, body).map_err(|e| GraftError::io(&tmp, e))?;
    let dest = dir.join(MARKER);
    fs::rename(&tmp, &dest).map_err(|e| GraftError::io(&dest, e))
}

/// Streams `path` through sha256, returning the hex digest and the byte count.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(|e| GraftError::io(path, e))?;
    let mut hasher = HashWriter::new(io::sink());
    io::copy(&mut file, &mut hasher).map_err(|e| GraftError::io(path, e))?;
    Ok(hasher.finish().1)
}

/// A writer that hashes everything passing through it, so files are verified while they are
/// written instead of being read back.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Returns the inner writer and `(hex sha256, bytes written)`.
    pub fn finish(self) -> (W, (String, u64)) {
        (self.inner, (hex::encode(self.hasher.finalize()), self.len))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An exclusive lock on one asset name, released when dropped (closing the file drops the
/// `flock`, also when the process dies, so a crashed fetch never leaves a stale lock).
pub(crate) struct AssetLock {
    _file: File,
}

/// Blocks until this process holds `<cache>/.locks/<name>.lock`.
pub(crate) fn lock(cache: &Path, name: &str) -> Result<AssetLock> {
    let dir = cache.join(".locks");
    fs::create_dir_all(&dir).map_err(|e| GraftError::io(&dir, e))?;
    let path = dir.join(format!("{name}.lock"));
    let file =
        File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| GraftError::io(&path, e))?;
    file.lock().map_err(|e| GraftError::io(&path, e))?;
    Ok(AssetLock { _file: file })
}

/// The folder holding work folders of fetches in progress.
pub(crate) fn tmp_root(cache: &Path) -> PathBuf {
    cache.join(".tmp")
}

/// Removes work folders that earlier, interrupted fetches of `name` left behind. Only call
/// while holding `name`'s lock: then no live fetch owns them.
pub(crate) fn remove_stale_work(cache: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(tmp_root(cache)) else {
        return;
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // Best effort: a leftover we cannot remove only costs disk space.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves the fully verified `staged` folder to `dest`, replacing whatever was there. Both are
/// inside the cache, so the rename is atomic: readers see the old folder or the new one.
pub(crate) fn install(staged: &Path, dest: &Path, work: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    }
    let old = work.join("replaced");
    let had_old = dest.exists();
    if had_old {
        fs::rename(dest, &old).map_err(|e| GraftError::io(dest, e))?;
    }
    if let Err(e) = fs::rename(staged, dest) {
        if had_old {
            // Put the previous folder back so a failed install changes nothing.
            let _ = fs::rename(&old, dest);
        }
        return Err(GraftError::io(dest, e));
    }
    if let Some(parent) = dest.parent() {
        // Make the rename durable; not every filesystem supports syncing a folder.
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lines_round_trip() {
        let line = format!("{} 42 1_Pooling/config.json", "a".repeat(64));
        let (sha, size, dest) = parse_marker_line(&line).unwrap();
        assert_eq!((sha.len(), size, dest), (64, 42, "1_Pooling/config.json"));
        assert!(parse_marker_line("abc notanumber x").is_none());
    }

    #[test]
    fn hash_writer_matches_known_digest() {
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (inner, (sha, len)) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(len, 5);
        assert_eq!(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }
}
