//! Writing GGUF files: metadata of every value type, dense (F32, F16, BF16) and quantized
//! tensors, aligned as the format requires, written to a temporary file in the target folder,
//! synced and renamed into place so a crash never leaves a half-written file under the final
//! name. Everything written is what [`super::GgufFile`] accepts.

use super::error::GgufError;
use super::types::{
    dtype_code, dtype_is_storable, tensor_bytes, value_type as vt, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_ARRAY_DEPTH,
    MAX_ARRAY_LEN, MAX_DIMS, MAX_STRING_LEN, MAX_TENSOR_NAME, MAX_TOTAL_ARRAY_ELEMENTS,
};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Builds a GGUF file (version 3, little-endian) from metadata and tensors.
///
/// Tensors are given in candle's shape order (outermost first) and stored in GGUF's (innermost
/// first). Names and shapes are written as given: for a Llama export, rename to llama.cpp's
/// names and permute q/k rows first (see `models::llama::weights`).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::quantized::{gguf_file::Value, GgmlDType};
/// use graft::io::gguf::GgufWriter;
/// let w = candle_core::Tensor::zeros((64, 32), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let mut gguf = GgufWriter::new();
/// gguf.add_metadata("general.architecture", Value::String("llama".into()))?;
/// gguf.add_tensor("blk.0.attn_q.weight", &w, GgmlDType::Q8_0)?;
/// gguf.write("model.gguf")?;
/// # Ok(()) }
/// ```
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    array_elements: u64,
    tensors: Vec<(String, QTensor)>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty file with the default alignment (32 bytes).
    pub fn new() -> Self {
        Self {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            array_elements: 0,
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The alignment tensor data will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Sets the alignment of tensor data (a power of two ≤ 1 MiB), recorded as
    /// `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufError> {
        self.add_metadata("general.alignment", Value::U32(alignment))
    }

    /// Adds a metadata entry. Keys must be unique; arrays must hold one element type per level
    /// and nest at most 4 deep; `general.alignment` must be a `u32` power of two ≤ 1 MiB.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) -> Result<&mut Self, GgufError> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(GgufError::Build {
                item: format!("metadata `{key}`"),
                reason: "the key was already added".into(),
            });
        }
        self.set_metadata(key, value)
    }

    /// Sets a metadata entry: replaces the value of a key already added (keeping its place) or
    /// adds the key. The rules of [`GgufWriter::add_metadata`] apply; on error nothing changes.
    /// With [`GgufWriter::remove_metadata`], this rewrites a file with some values changed.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: Value) -> Result<&mut Self, GgufError> {
        let key = key.into();
        let fail = |reason: String| GgufError::Build { item: format!("metadata `{key}`"), reason };
        check_string(&key).map_err(fail)?;
        let elements = check_value(&value).map_err(fail)?;
        let at = self.metadata.iter().position(|(k, _)| *k == key);
        // The old value was checked when it was added.
        let freed = at.map_or(0, |i| check_value(&self.metadata[i].1).unwrap_or(0));
        if elements > MAX_TOTAL_ARRAY_ELEMENTS - (self.array_elements - freed) {
            return Err(fail(format!("the file would hold more than {MAX_TOTAL_ARRAY_ELEMENTS} array elements")));
        }
        if key == "general.alignment" {
            match &value {
                Value::U32(a) if a.is_power_of_two() && u64::from(*a) <= MAX_ALIGNMENT => {
                    self.alignment = u64::from(*a)
                }
                other => {
                    return Err(fail(format!("must be a U32 power of two <= {MAX_ALIGNMENT}, got {other:?}")));
                }
            }
        }
        self.array_elements = self.array_elements - freed + elements;
        match at {
            Some(i) => self.metadata[i].1 = value,
            None => {
                self.keys.insert(key.clone());
                self.metadata.push((key, value));
            }
        }
        Ok(self)
    }

    /// Removes a metadata entry, returning its value (`None` when the key was not added).
    pub fn remove_metadata(&mut self, key: &str) -> Option<Value> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        let (_, value) = self.metadata.remove(i);
        self.keys.remove(key);
        self.array_elements -= check_value(&value).unwrap_or(0);
        if key == "general.alignment" {
            self.alignment = DEFAULT_ALIGNMENT;
        }
        Some(value)
    }

    /// Adds a dense tensor, stored as `dtype`: F32, F16 and BF16 as converted values, quantized
    /// types through candle's `QTensor::quantize` (the innermost dimension must be a multiple
    /// of the block size: 32, or 256 for k-quants).
    pub fn add_tensor(&mut self, name: &str, tensor: &Tensor, dtype: GgmlDType) -> Result<&mut Self, GgufError> {
        let fail = |reason: String| GgufError::Build { item: format!("tensor `{name}`"), reason };
        self.check_tensor(name, tensor.dims(), dtype)?;
        let q = tensor
            .to_device(&Device::Cpu)
            .and_then(|t| QTensor::quantize(&t, dtype))
            .map_err(|e| fail(format!("cannot convert to {dtype:?}: {e}")))?;
        self.push_tensor(name, q)
    }

    /// Adds an already-quantized tensor, written block for block as it is.
    pub fn add_qtensor(&mut self, name: &str, tensor: QTensor) -> Result<&mut Self, GgufError> {
        self.check_tensor(name, tensor.shape().dims(), tensor.dtype())?;
        self.push_tensor(name, tensor)
    }

    fn push_tensor(&mut self, name: &str, q: QTensor) -> Result<&mut Self, GgufError> {
        self.names.insert(name.to_string());
        self.tensors.push((name.to_string(), q));
        Ok(self)
    }

    fn check_tensor(&self, name: &str, dims: &[usize], dtype: GgmlDType) -> Result<(), GgufError> {
        let fail = |reason: String| Err(GgufError::Build { item: format!("tensor `{name}`"), reason });
        if self.names.contains(name) {
            return fail("a tensor of this name was already added".into());
        }
        if name.len() > MAX_TENSOR_NAME {
            return fail(format!("name is {} bytes, llama.cpp accepts at most {MAX_TENSOR_NAME}", name.len()));
        }
        check_string(name).map_err(|reason| GgufError::Build { item: format!("tensor `{name}`"), reason })?;
        if !dtype_is_storable(dtype) {
            return fail(format!("{dtype:?} is an internal ggml format; store Q8_0 or another file type"));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS as usize || dims.contains(&0) {
            return fail(format!("shape {dims:?}: GGUF tensors have 1 to {MAX_DIMS} dimensions, none of them 0"));
        }
        let inner = dims[dims.len() - 1];
        if !inner.is_multiple_of(dtype.block_size()) {
            return fail(format!(
                "innermost dimension {inner} is not a multiple of the {dtype:?} block size {}",
                dtype.block_size()
            ));
        }
        Ok(())
    }

    /// The whole file as bytes (for small files and tests).
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out, Path::new("<memory>"))?;
        Ok(out)
    }

    /// Writes the file to `path` atomically: into a temporary file in the same folder, synced to
    /// disk, then renamed over `path`. On error the temporary file is removed and `path` is
    /// untouched.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let Some(file_name) = path.file_name() else {
            return Err(GgufError::Build { item: path.display().to_string(), reason: "not a file path".into() });
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            self.write_to(&mut w, path)?;
            w.flush().map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        crate::io::sync_dir(dir).map_err(|source| GgufError::Io { path: dir.to_path_buf(), source })
    }

    /// Writes header, metadata, tensor table, padding and tensor data; returns the bytes written.
    fn write_to<W: Write>(&self, w: W, path: &Path) -> Result<u64, GgufError> {
        let mut w = Counted { inner: w, pos: 0 };
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        w.put(b"GGUF").map_err(io)?;
        w.put(&3u32.to_le_bytes()).map_err(io)?;
        w.put(&(self.tensors.len() as u64).to_le_bytes()).map_err(io)?;
        w.put(&(self.metadata.len() as u64).to_le_bytes()).map_err(io)?;
        for (key, value) in &self.metadata {
            w.string(key).map_err(io)?;
            w.put(&type_code(value).to_le_bytes()).map_err(io)?;
            w.value(value).map_err(io)?;
        }
        let mut sizes = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for (name, q) in &self.tensors {
            let dims = q.shape().dims();
            let elems = dims.iter().map(|&d| d as u64).product::<u64>();
            let size = tensor_bytes(q.dtype(), elems).ok_or_else(|| GgufError::Build {
                item: format!("tensor `{name}`"),
                reason: "shape does not fit its type".into(),
            })?;
            w.string(name).map_err(io)?;
            w.put(&(dims.len() as u32).to_le_bytes()).map_err(io)?;
            for &d in dims.iter().rev() {
                w.put(&(d as u64).to_le_bytes()).map_err(io)?;
            }
            w.put(&dtype_code(q.dtype()).to_le_bytes()).map_err(io)?;
            w.put(&offset.to_le_bytes()).map_err(io)?;
            sizes.push(size);
            offset = (offset + size).next_multiple_of(self.alignment);
        }
        w.pad(self.alignment).map_err(io)?;
        for ((name, q), size) in self.tensors.iter().zip(sizes) {
            let data =
                q.data().map_err(|e| GgufError::Build { item: format!("tensor `{name}`"), reason: e.to_string() })?;
            if data.len() as u64 != size {
                let reason = format!("holds {} bytes, its shape and type need {size}", data.len());
                return Err(GgufError::Build { item: format!("tensor `{name}`"), reason });
            }
            w.put(&data).map_err(io)?;
            w.pad(self.alignment).map_err(io)?;
        }
        Ok(w.pos)
    }
}

/// The GGUF type code of a metadata value.
fn type_code(v: &Value) -> u32 {
    match v {
        Value::U8(_) => vt::U8,
        Value::I8(_) => vt::I8,
        Value::U16(_) => vt::U16,
        Value::I16(_) => vt::I16,
        Value::U32(_) => vt::U32,
        Value::I32(_) => vt::I32,
        Value::U64(_) => vt::U64,
        Value::I64(_) => vt::I64,
        Value::F32(_) => vt::F32,
        Value::F64(_) => vt::F64,
        Value::Bool(_) => vt::BOOL,
        Value::String(_) => vt::STRING,
        Value::Array(_) => vt::ARRAY,
    }
}

/// Strings must survive a read back unchanged: no trailing NUL (readers drop them), within
/// the length cap.
fn check_string(s: &str) -> Result<(), String> {
    if s.len() as u64 > MAX_STRING_LEN {
        return Err(format!("a string of {} bytes exceeds the cap of {MAX_STRING_LEN}", s.len()));
    }
    if s.ends_with('\0') {
        return Err("a string ends with a NUL byte, which readers drop".into());
    }
    Ok(())
}

/// Checks a value can be written and read back (iteratively: a value built in memory may nest
/// arbitrarily deep); returns how many array elements it holds.
fn check_value(v: &Value) -> Result<u64, String> {
    let mut elements = 0u64;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::String(s) => check_string(s)?,
            Value::Array(items) => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nest deeper than {MAX_ARRAY_DEPTH} levels"));
                }
                if items.len() as u64 > MAX_ARRAY_LEN {
                    return Err(format!("an array of {} elements exceeds the cap of {MAX_ARRAY_LEN}", items.len()));
                }
                elements += items.len() as u64;
                if let Some(first) = items.first() {
                    let t = type_code(first);
                    if items.iter().any(|x| type_code(x) != t) {
                        return Err("an array mixes element types; GGUF arrays hold one type".into());
                    }
                }
                stack.extend(
                    items.iter().filter(|x| matches!(x, Value::String(_) | Value::Array(_))).map(|x| (x, depth + 1)),
                );
            }
            _ => {}
        }
    }
    Ok(elements)
}

/// A writer that counts bytes so padding can be computed.
struct Counted<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn string(&mut self, s: &str) -> std::io::Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    fn pad(&mut self, alignment: u64) -> std::io::Result<()> {
        let n = self.pos.next_multiple_of(alignment) - self.pos;
        self.put(&vec![0u8; n as usize])
    }

    /// Writes a value (its type code already written). Arrays recurse, at most
    /// [`MAX_ARRAY_DEPTH`] deep as checked when added.
    fn value(&mut self, v: &Value) -> std::io::Result<()> {
        match v {
            Value::U8(x) => self.put(&x.to_le_bytes()),
            Value::I8(x) => self.put(&x.to_le_bytes()),
            Value::U16(x) => self.put(&x.to_le_bytes()),
            Value::I16(x) => self.put(&x.to_le_bytes()),
            Value::U32(x) => self.put(&x.to_le_bytes()),
            Value::I32(x) => self.put(&x.to_le_bytes()),
            Value::U64(x) => self.put(&x.to_le_bytes()),
            Value::I64(x) => self.put(&x.to_le_bytes()),
            Value::F32(x) => self.put(&x.to_le_bytes()),
            Value::F64(x) => self.put(&x.to_le_bytes()),
            Value::Bool(x) => self.put(&[u8::from(*x)]),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                let elem = items.first().map_or(vt::U32, type_code);
                self.put(&elem.to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|x| self.value(x))
            }
        }
    }
}
