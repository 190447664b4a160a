//! Reading GGUF files (llama.cpp's model format).
//!
//! [`GgufFile::open`] reads the header, metadata and tensor table; tensors are read on demand,
//! kept quantized ([`GgufFile::qtensor`]) or dequantized ([`GgufFile::dequantize`]).

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The GGUF file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a GGUF file graft can read.
    #[error("{path}: not a valid GGUF file: {reason}")]
    Invalid {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("{path}: metadata `{key}`: {reason}")]
    Metadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is missing from the file.
    #[error("{path}: no tensor named `{name}`")]
    MissingTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
}

/// An opened GGUF file: its metadata and tensor table, with tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

impl GgufFile {
    /// Opens and parses the header, metadata and tensor table of `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let mut file =
            File::open(&path).map_err(|source| GgufError::Io { path: path.clone(), source })?;
        let content = Content::read(&mut file)
            .map_err(|e| GgufError::Invalid { path: path.clone(), reason: e.to_string() })?;
        Ok(Self { path, content })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// candle's view of the header (metadata, tensor infos, data offset).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata value, or a [`GgufError::Metadata`] naming the missing key.
    pub fn meta(&self, key: &str) -> Result<&Value, GgufError> {
        self.content.metadata.get(key).ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A metadata value read as u32 (any integer type that fits).
    pub fn meta_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.meta(key)?;
        let n = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            other => return Err(self.meta_err(key, &format!("expected an integer, found {other:?}"))),
        };
        u32::try_from(n).map_err(|_| self.meta_err(key, &format!("{n} does not fit in u32")))
    }

    /// A metadata value read as f32 (f32 or f64).
    pub fn meta_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.meta(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.meta_err(key, &format!("expected a float, found {other:?}"))),
        }
    }

    /// A metadata value read as a string.
    pub fn meta_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.meta(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.meta_err(key, &format!("expected a string, found {other:?}"))),
        }
    }

    fn meta_err(&self, key: &str, reason: &str) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.into(), reason: reason.into() }
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor, kept in its stored (possibly quantized) format.
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor, GgufError> {
        if !self.has_tensor(name) {
            return Err(GgufError::MissingTensor { path: self.path.clone(), name: name.into() });
        }
        let mut file = File::open(&self.path)
            .map_err(|source| GgufError::Io { path: self.path.clone(), source })?;
        self.content
            .tensor(&mut file, name, device)
            .map_err(|e| GgufError::Invalid { path: self.path.clone(), reason: format!("tensor `{name}`: {e}") })
    }

    /// Reads one tensor and dequantizes it (in f32 arithmetic) to `dtype`.
    pub fn dequantize(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, GgufError> {
        let q = self.qtensor(name, device)?;
        q.dequantize(device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| GgufError::Invalid { path: self.path.clone(), reason: format!("tensor `{name}`: {e}") })
    }
}
