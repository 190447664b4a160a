//! An R lazy-load database, as R packages keep their datasets in `data/Rdata.rdx` +
//! `data/Rdata.rdb`.
//!
//! The `.rdx` index is a gzip'd (or plain) R serialization of
//! `list(variables = list(NAME = c(offset, length), ...), references = ..., compressed = TRUE)`.
//! Each variable is a blob of the `.rdb` at `offset` of `length` bytes: with zlib compression
//! (`compressed = TRUE`), a 4-byte big-endian uncompressed length and a zlib stream of the
//! value's R serialization; without (`FALSE`), the serialization itself. bzip2 and xz databases
//! (`compressed = 2` / `3`) are refused with a clear error.

use super::serial::{parse, RObject, RValue};
use super::{Limits, RDataError};
use crate::{GraftError, Result};
use flate2::read::{GzDecoder, ZlibDecoder};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How the blobs of a database are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The blob is the serialization.
    None,
    /// A 4-byte big-endian length, then a zlib stream.
    Zlib,
}

/// One variable of the index: where its blob is in the `.rdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    offset: u64,
    len: u64,
}

/// An opened lazy-load database: the index, read; blobs are read on demand by [`Self::read`].
#[derive(Debug, Clone)]
pub struct LazyLoadDb {
    rdb: PathBuf,
    entries: Vec<Entry>,
    compression: Compression,
    limits: Limits,
}

/// `path: error`, as bad input.
fn input_error(path: &Path, e: RDataError) -> GraftError {
    GraftError::Input(format!("{}: {e}", path.display()))
}

impl LazyLoadDb {
    /// Reads the index `rdx` of the database whose blobs are in `rdb`, with the default
    /// [`Limits`].
    pub fn open(rdx: &Path, rdb: &Path) -> Result<Self> {
        Self::open_with(rdx, rdb, Limits::default())
    }

    /// [`Self::open`] with explicit limits.
    pub fn open_with(rdx: &Path, rdb: &Path, limits: Limits) -> Result<Self> {
        let file = std::fs::File::open(rdx).map_err(|e| GraftError::io(rdx, e))?;
        let size = file.metadata().map_err(|e| GraftError::io(rdx, e))?.len();
        if size > limits.max_bytes as u64 {
            let what = format!("{size} bytes is over the limit of {}", limits.max_bytes);
            return Err(input_error(rdx, RDataError::BadLength { offset: 0, what }));
        }
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(|e| GraftError::io(rdx, e))?;
        let (entries, compression) = read_index(&bytes, &limits).map_err(|e| input_error(rdx, e))?;
        Ok(Self { rdb: rdb.to_path_buf(), entries, compression, limits })
    }

    /// The variables, in index order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// How the blobs are stored.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The value of variable `name`: its blob read from the `.rdb`, inflated and parsed.
    pub fn read(&self, name: &str) -> Result<RObject> {
        let entry = self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            GraftError::Input(format!(
                "{}: no variable `{name}`; it has {}",
                self.rdb.display(),
                self.names().join(", ")
            ))
        })?;
        let mut file = std::fs::File::open(&self.rdb).map_err(|e| GraftError::io(&self.rdb, e))?;
        let size = file.metadata().map_err(|e| GraftError::io(&self.rdb, e))?.len();
        let end = entry.offset.checked_add(entry.len);
        if end.is_none_or(|end| end > size) || entry.len > self.limits.max_bytes as u64 {
            let what = format!(
                "`{name}` spans bytes {}..+{} of a {size}-byte file (at most {} bytes per blob)",
                entry.offset, entry.len, self.limits.max_bytes
            );
            return Err(input_error(&self.rdb, RDataError::Database(what)));
        }
        // Both fit: the blob lies inside the file and under `max_bytes`.
        let mut blob = vec![0; entry.len as usize];
        file.seek(SeekFrom::Start(entry.offset)).map_err(|e| GraftError::io(&self.rdb, e))?;
        file.read_exact(&mut blob).map_err(|e| GraftError::io(&self.rdb, e))?;
        let ser = decode_blob(&blob, self.compression, &self.limits).map_err(|e| input_error(&self.rdb, e))?;
        parse(&ser, &self.limits).map_err(|e| input_error(&self.rdb, RDataError::Database(format!("`{name}`: {e}"))))
    }
}

/// The serialization inside one `.rdb` blob.
pub fn decode_blob(blob: &[u8], compression: Compression, limits: &Limits) -> Result<Vec<u8>, RDataError> {
    match compression {
        Compression::None => Ok(blob.to_vec()),
        Compression::Zlib => {
            let Some((len, stream)) = blob.split_first_chunk::<4>() else {
                return Err(RDataError::Truncated { offset: 0, needed: 4 - blob.len() });
            };
            let declared = u32::from_be_bytes(*len) as usize;
            if declared > limits.max_bytes {
                return Err(RDataError::BadLength {
                    offset: 0,
                    what: format!("blob declares {declared} bytes, over the limit of {}", limits.max_bytes),
                });
            }
            inflate(ZlibDecoder::new(stream), declared)
        }
    }
}

/// Reads at most `declared + 1` bytes from `decoder` and checks that exactly `declared` came.
fn inflate(decoder: impl Read, declared: usize) -> Result<Vec<u8>, RDataError> {
    let mut out = Vec::new();
    decoder.take(declared as u64 + 1).read_to_end(&mut out).map_err(|e| RDataError::Compression(e.to_string()))?;
    if out.len() != declared {
        let what = if out.len() > declared { "more than".to_string() } else { out.len().to_string() };
        return Err(RDataError::Compression(format!("inflates to {what} bytes, but its header says {declared}")));
    }
    Ok(out)
}

/// The index's serialization: gunzipped (bounded by `max_bytes`) or as is.
fn index_serialization(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, RDataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes)
            .take(limits.max_bytes as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| RDataError::Compression(format!("gzip: {e}")))?;
        if out.len() > limits.max_bytes {
            return Err(RDataError::Compression(format!("gzip: inflates to over {} bytes", limits.max_bytes)));
        }
        Ok(out)
    } else if bytes.starts_with(b"BZh") || bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
        Err(RDataError::Compression("bzip2 / xz compressed indexes are not read".into()))
    } else {
        Ok(bytes.to_vec())
    }
}

/// The variables and the blob compression of an index file's bytes.
fn read_index(bytes: &[u8], limits: &Limits) -> Result<(Vec<Entry>, Compression), RDataError> {
    let index = parse(&index_serialization(bytes, limits)?, limits)?;
    let bad = |what: &str| RDataError::Database(what.to_string());
    let variables = index.get("variables").ok_or_else(|| bad("the index has no `variables` list"))?;
    let RValue::List(items) = &variables.value else { return Err(bad("`variables` is not a list")) };
    let names = variables.names().ok_or_else(|| bad("`variables` has no names"))?;
    if names.len() != items.len() {
        return Err(bad("`variables` has a names attribute of another length"));
    }
    let mut entries = Vec::with_capacity(items.len());
    for (name, item) in names.iter().zip(items) {
        let name = name.clone().ok_or_else(|| bad("a variable named NA"))?;
        let position = match &item.value {
            RValue::Integer(v) => match v.as_slice() {
                &[Some(offset), Some(len)] => u64::try_from(offset).ok().zip(u64::try_from(len).ok()),
                _ => None,
            },
            _ => None,
        };
        let (offset, len) = position
            .ok_or_else(|| RDataError::Database(format!("variable `{name}`: not two non-negative integers")))?;
        entries.push(Entry { name, offset, len });
    }
    let compression = match index.get("compressed").map(|c| &c.value) {
        Some(RValue::Logical(v)) if v.as_slice() == [Some(true)] => Compression::Zlib,
        Some(RValue::Logical(v)) if v.as_slice() == [Some(false)] => Compression::None,
        Some(RValue::Integer(v)) if v.as_slice() == [Some(1)] => Compression::Zlib,
        Some(RValue::Integer(v)) if matches!(v.as_slice(), [Some(2 | 3)]) => {
            return Err(RDataError::Compression("bzip2 / xz compressed databases are not read".into()))
        }
        _ => return Err(bad("`compressed` is not TRUE, FALSE or a compression type")),
    };
    Ok((entries, compression))
}
