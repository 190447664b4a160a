//! Reading safetensors files with the header validated before the file is memory-mapped.
//!
//! [`open_safetensors`] reads the 8-byte header length and the JSON header with bounded reads,
//! checks them (length against the file and the 100 MB cap, a JSON object in valid UTF-8, no
//! duplicate names, offsets that tile the data section exactly with sizes that match dtype and
//! shape, dtypes candle can load), and only then maps the file. Every failure is a
//! [`SafetensorsError`] naming the file.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Writes `tensors` as one safetensors file at `path`: into a temporary file beside it, then
/// synced and renamed into place, so a reader never sees a half-written file.
pub fn save_atomic(tensors: impl IntoIterator<Item = (String, Tensor)>, path: &Path) -> crate::Result<()> {
    save_atomic_with_metadata(tensors, HashMap::new(), path)
}

/// [`save_atomic`] with `metadata` in the header's `__metadata__` (a description that must be
/// replaced together with the weights it describes).
pub fn save_atomic_with_metadata(
    tensors: impl IntoIterator<Item = (String, Tensor)>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> crate::Result<()> {
    let map: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".partial")
        .suffix(".safetensors")
        .tempfile_in(dir)
        .map_err(|e| crate::GraftError::io(dir, e))?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize_to_file(map, meta, tmp.path())
        .map_err(|e| crate::GraftError::io(path, std::io::Error::other(e.to_string())))?;
    tmp.as_file().sync_all().map_err(|e| crate::GraftError::io(path, e))?;
    tmp.persist(path).map_err(|e| crate::GraftError::io(path, e.error))?;
    Ok(())
}

/// Largest JSON header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A safetensors file that could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct SafetensorsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: SafetensorsErrorKind,
}

/// What is wrong with a safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsErrorKind {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The file cannot even hold the 8-byte header length.
    #[error("file is {len} bytes, too short for the 8-byte header length (is it truncated?)")]
    TooSmall {
        /// The file length.
        len: u64,
    },
    /// The header length is above the cap.
    #[error("header length {header_len} exceeds the cap of {cap} bytes; not a safetensors file or corrupt")]
    HeaderTooLarge {
        /// The declared header length.
        header_len: u64,
        /// The cap.
        cap: u64,
    },
    /// The header length runs past the end of the file.
    #[error("header length {header_len} runs past the end of the file ({file_len} bytes; is it truncated?)")]
    HeaderPastEof {
        /// The declared header length.
        header_len: u64,
        /// The file length.
        file_len: u64,
    },
    /// The header does not start with `{`.
    #[error("the header must be a JSON object starting with `{{`, found {found}; not a safetensors file")]
    NotAnObject {
        /// What was found instead.
        found: String,
    },
    /// The header is not valid UTF-8.
    #[error("the header is not valid UTF-8 (byte {offset} of the file)")]
    InvalidUtf8 {
        /// File offset of the first invalid byte.
        offset: u64,
    },
    /// A name appears twice in the header.
    #[error("the header lists `{key}` twice")]
    DuplicateKey {
        /// The repeated name.
        key: String,
    },
    /// The header is not a valid safetensors header (bad JSON, offsets, shapes or dtypes).
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The data section is not exactly as long as the header describes.
    #[error("the header describes {expected} bytes of tensor data but the file has {found} (is it truncated?)")]
    DataSizeMismatch {
        /// Bytes the header's offsets cover.
        expected: u64,
        /// Bytes after the header.
        found: u64,
    },
    /// A dtype candle cannot hold.
    #[error("tensor `{name}` has dtype {dtype}, which graft cannot load")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// No tensor of that name.
    #[error("no tensor named `{name}`")]
    MissingTensor {
        /// The name asked for.
        name: String,
    },
    /// A validated tensor could not be turned into a candle tensor.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// Shape and dtype of one tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// The candle dtype it loads as.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// A validated, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    tensors: HashMap<String, TensorMeta>,
    extra: Option<HashMap<String, String>>,
    mmap: MmapedSafetensors,
}

/// Validates and memory-maps the safetensors file at `path`.
///
/// The mapping assumes the file is not modified while it is open (as every safetensors reader
/// does); graft writes its own files by atomic rename, which never changes a mapped file.
pub fn open_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsFile, SafetensorsError> {
    let path = path.as_ref();
    let err = |kind| SafetensorsError { path: path.to_path_buf(), kind };
    let mut file = File::open(path).map_err(|e| err(SafetensorsErrorKind::Io(e)))?;
    let file_len = file.metadata().map_err(|e| err(SafetensorsErrorKind::Io(e)))?.len();
    let metadata = read_header(&mut file, file_len).map_err(err)?;
    drop(file);
    // SAFETY: the header and the data size were checked above; the file is mapped read-only and
    // is not modified while open (see the function docs).
    let mmap =
        unsafe { MmapedSafetensors::new(path) }.map_err(|e| err(SafetensorsErrorKind::InvalidHeader(e.to_string())))?;
    let tensors = tensor_metas(&metadata).map_err(err)?;
    Ok(SafetensorsFile { path: path.to_path_buf(), tensors, extra: metadata.metadata().clone(), mmap })
}

/// Validates a whole safetensors file held in memory without loading any tensor, returning the
/// shape and dtype of each tensor; `label` names it in errors. The same checks as
/// [`open_safetensors`], usable on every prefix of a file or on fuzzed bytes.
pub fn check_safetensors(bytes: &[u8], label: &Path) -> Result<HashMap<String, TensorMeta>, SafetensorsError> {
    let err = |kind| SafetensorsError { path: label.to_path_buf(), kind };
    let metadata = read_header(&mut &bytes[..], bytes.len() as u64).map_err(err)?;
    safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| err(SafetensorsErrorKind::InvalidHeader(e.to_string())))?;
    tensor_metas(&metadata).map_err(err)
}

impl SafetensorsFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Shape and dtype of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.get(name)
    }

    /// The free-form `__metadata__` map of the header, if any.
    pub fn user_metadata(&self) -> Option<&HashMap<String, String>> {
        self.extra.as_ref()
    }

    /// Loads tensor `name` onto `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor, SafetensorsError> {
        let err = |kind| SafetensorsError { path: self.path.clone(), kind };
        if !self.tensors.contains_key(name) {
            return Err(err(SafetensorsErrorKind::MissingTensor { name: name.into() }));
        }
        self.mmap
            .load(name, device)
            .map_err(|e| err(SafetensorsErrorKind::Tensor { name: name.into(), reason: e.to_string() }))
    }

    /// Loads every tensor onto `device`.
    pub fn load_all(&self, device: &Device) -> Result<HashMap<String, Tensor>, SafetensorsError> {
        self.tensors.keys().map(|name| Ok((name.clone(), self.tensor(name, device)?))).collect()
    }
}

/// Reads and checks the header of a file of `file_len` bytes with bounded reads.
fn read_header<R: Read>(r: &mut R, file_len: u64) -> Result<Metadata, SafetensorsErrorKind> {
    if file_len < 8 {
        return Err(SafetensorsErrorKind::TooSmall { len: file_len });
    }
    let mut len_bytes = [0u8; 8];
    r.read_exact(&mut len_bytes).map_err(SafetensorsErrorKind::Io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(SafetensorsErrorKind::HeaderTooLarge { header_len, cap: MAX_HEADER_BYTES });
    }
    if header_len > file_len - 8 {
        return Err(SafetensorsErrorKind::HeaderPastEof { header_len, file_len });
    }
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header).map_err(SafetensorsErrorKind::Io)?;
    match header.first() {
        Some(b'{') => {}
        Some(b) => return Err(SafetensorsErrorKind::NotAnObject { found: format!("byte 0x{b:02x}") }),
        None => return Err(SafetensorsErrorKind::NotAnObject { found: "an empty header".into() }),
    }
    let text = std::str::from_utf8(&header)
        .map_err(|e| SafetensorsErrorKind::InvalidUtf8 { offset: 8 + e.valid_up_to() as u64 })?;
    check_duplicate_keys(text)?;
    let metadata: Metadata =
        serde_json::from_str(text).map_err(|e| SafetensorsErrorKind::InvalidHeader(e.to_string()))?;
    let expected = metadata.data_len() as u64;
    let found = file_len - 8 - header_len;
    if expected != found {
        return Err(SafetensorsErrorKind::DataSizeMismatch { expected, found });
    }
    Ok(metadata)
}

/// Rejects a header whose top-level object names a key twice (JSON maps keep the last silently).
fn check_duplicate_keys(text: &str) -> Result<(), SafetensorsErrorKind> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Result<(), String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Ok(Err(key));
                }
            }
            Ok(Ok(()))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_map(Keys) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(key)) => Err(SafetensorsErrorKind::DuplicateKey { key }),
        Err(e) => Err(SafetensorsErrorKind::InvalidHeader(e.to_string())),
    }
}

/// The candle dtype a safetensors dtype loads as, if candle can hold it.
fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::U8 => DType::U8,
        Dtype::U16 | Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F8_E4M3 => DType::F8E4M3,
        _ => return None,
    })
}

fn tensor_metas(metadata: &Metadata) -> Result<HashMap<String, TensorMeta>, SafetensorsErrorKind> {
    metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| match candle_dtype(info.dtype) {
            Some(dtype) => Ok((name, TensorMeta { dtype, shape: info.shape.clone() })),
            None => Err(SafetensorsErrorKind::UnsupportedDType { name, dtype: format!("{:?}", info.dtype) }),
        })
        .collect()
}
