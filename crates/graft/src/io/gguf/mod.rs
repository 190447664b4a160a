//! Reading and writing GGUF files (llama.cpp's model format).
//!
//! [`GgufFile::open`] reads the header, metadata and tensor table with graft's own validating
//! parser ([`reader`]): every count, length, type code, shape and offset is checked against the
//! file before anything is allocated, and a bad file yields a [`GgufError`] naming the byte at
//! fault. Tensors are read on demand, kept quantized ([`GgufFile::qtensor`]) or dequantized
//! ([`GgufFile::dequantize`]). [`GgufWriter`] writes files (metadata, dense and quantized
//! tensors) atomically. The rules and caps are listed in `docs/formats.md`.

mod error;
pub mod reader;
mod rounding;
pub mod types;
mod writer;

pub use error::GgufError;
pub use reader::{parse_header, read_header, GgufHeader, TensorExtent};
pub use rounding::round_as_stored;
pub use writer::GgufWriter;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where tensor bytes are read from.
enum Source {
    /// The file at [`GgufFile::path`], reopened for each tensor.
    File,
    /// A whole file held in memory.
    Memory(Arc<[u8]>),
}

/// An opened GGUF file: its validated metadata and tensor table, with tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    source: Source,
    header: GgufHeader,
}

impl GgufFile {
    /// Opens and validates the header, metadata and tensor table of `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let capacity = file_len.clamp(64, 1 << 16) as usize;
        let header = read_header(BufReader::with_capacity(capacity, file), file_len, &path)?;
        Ok(Self { path, source: Source::File, header })
    }

    /// Validates a GGUF file held in memory; `label` stands for its path in errors.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>, label: impl Into<PathBuf>) -> Result<Self, GgufError> {
        let bytes = bytes.into();
        let path = label.into();
        let header = parse_header(&bytes, &path)?;
        Ok(Self { path, source: Source::Memory(bytes), header })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// candle's view of the header (metadata, tensor infos, data offset).
    pub fn content(&self) -> &Content {
        &self.header.content
    }

    /// The validated header: version, alignment and where each tensor lies.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// Tensor names in the order of the file's tensor table.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.iter().map(|t| t.name.as_str())
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.header.content.metadata
    }

    /// A metadata value, or a [`GgufError::Metadata`] naming the missing key.
    pub fn meta(&self, key: &str) -> Result<&Value, GgufError> {
        self.metadata().get(key).ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A metadata value read as u32 (any integer type that fits).
    pub fn meta_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.meta(key)?;
        let n = value_as_int(v)
            .ok_or_else(|| self.meta_err(key, &format!("expected an integer, found {}", describe(v))))?;
        u32::try_from(n).map_err(|_| self.meta_err(key, &format!("{n} does not fit in u32")))
    }

    /// A metadata value read as f32 (f32 or f64).
    pub fn meta_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.meta(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.meta_err(key, &format!("expected a float, found {}", describe(other)))),
        }
    }

    /// [`GgufFile::meta_u32`] for an optional key: `None` when the key is absent, an error when it
    /// holds something else than a u32-sized integer.
    pub fn meta_u32_opt(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.metadata().get(key).map(|_| self.meta_u32(key)).transpose()
    }

    /// [`GgufFile::meta_f32`] for an optional key: `None` when the key is absent, an error when it
    /// holds something else than a float.
    pub fn meta_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.metadata().get(key).map(|_| self.meta_f32(key)).transpose()
    }

    /// A metadata value read as a string.
    pub fn meta_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.meta(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.meta_err(key, &format!("expected a string, found {}", describe(other)))),
        }
    }

    fn meta_err(&self, key: &str, reason: &str) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.into(), reason: reason.into() }
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.header.tensor(name).is_some()
    }

    fn extent(&self, name: &str) -> Result<&TensorExtent, GgufError> {
        self.header.tensor(name).ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.into() })
    }

    /// The bytes of tensor `name` exactly as stored (ggml blocks, little-endian).
    pub fn tensor_data(&self, name: &str) -> Result<Vec<u8>, GgufError> {
        let t = self.extent(name)?;
        let words = self.read_aligned(t)?;
        Ok(bytemuck::cast_slice::<u64, u8>(&words)[..t.len as usize].to_vec())
    }

    /// Reads the bytes of `t` into a buffer aligned for every ggml block type (candle reads the
    /// blocks in place, so the bytes must be aligned for them).
    fn read_aligned(&self, t: &TensorExtent) -> Result<Vec<u64>, GgufError> {
        // The header check put start + len inside the file, so both fit in usize.
        let len = t.len as usize;
        let mut words = vec![0u64; len.div_ceil(8)];
        let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
        let out_of_bounds = || GgufError::TensorOutOfBounds {
            path: self.path.clone(),
            name: t.name.clone(),
            end: t.start.saturating_add(t.len),
            file_len: self.header.file_len,
        };
        match &self.source {
            Source::Memory(bytes) => {
                let src = usize::try_from(t.start).ok().and_then(|s| bytes.get(s..s.checked_add(len)?));
                buf.copy_from_slice(src.ok_or_else(out_of_bounds)?);
            }
            Source::File => {
                let io = |source| GgufError::Io { path: self.path.clone(), source };
                let mut file = File::open(&self.path).map_err(io)?;
                file.seek(SeekFrom::Start(t.start)).map_err(io)?;
                file.read_exact(buf).map_err(|e| match e.kind() {
                    // The file was truncated after it was opened.
                    std::io::ErrorKind::UnexpectedEof => out_of_bounds(),
                    _ => io(e),
                })?;
            }
        }
        Ok(words)
    }

    /// Reads one tensor, kept in its stored (possibly quantized) format.
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor, GgufError> {
        let t = self.extent(name)?;
        let words = self.read_aligned(t)?;
        let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..t.len as usize];
        qtensor_from_ggml(t.dtype, bytes, t.dims.clone(), device).map_err(|e| self.tensor_err(name, e))
    }

    /// Reads one tensor and dequantizes it (in f32 arithmetic) to `dtype`.
    pub fn dequantize(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, GgufError> {
        let q = self.qtensor(name, device)?;
        q.dequantize(device).and_then(|t| t.to_dtype(dtype)).map_err(|e| self.tensor_err(name, e))
    }

    fn tensor_err(&self, name: &str, e: candle_core::Error) -> GgufError {
        GgufError::Tensor { path: self.path.clone(), name: name.into(), reason: e.to_string() }
    }
}

/// A short description of a metadata value for error messages (arrays by length, not content).
fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} elements", a.len()),
        Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        other => format!("{other:?}"),
    }
}

impl GgufError {
    /// Whether this is what a file cut short produces: a field, string, count or tensor that
    /// needs more bytes than the file has left. The fix is to download the file again.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self,
            GgufError::UnexpectedEof { .. }
                | GgufError::StringTooLong { .. }
                | GgufError::CountTooLarge { .. }
                | GgufError::TensorOutOfBounds { .. }
        )
    }
}

/// A metadata value of any integer type, widened; `None` for non-integers.
pub fn value_as_int(v: &Value) -> Option<i128> {
    Some(match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        _ => return None,
    })
}
