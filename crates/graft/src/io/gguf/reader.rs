//! A GGUF header parser that validates every count, length and offset against the bytes left in
//! the file before allocating, so a truncated, corrupt or hostile file yields a [`GgufError`]
//! naming the byte at fault instead of a panic, an abort or gigabytes of allocation.
//!
//! The result is candle's own [`Content`], filled only after validation, plus where each tensor's
//! bytes lie ([`TensorExtent`]).

use super::error::GgufError;
use super::types::{
    dtype_from_code, min_value_size, tensor_bytes, value_type as vt, DTypeCode, DEFAULT_ALIGNMENT, MAX_ALIGNMENT,
    MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_DIMS, MAX_KV, MAX_STRING_LEN, MAX_TENSORS, MAX_TOTAL_ARRAY_ELEMENTS,
};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Smallest metadata entry on disk: key length (8), empty key, value type (4), a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest tensor info on disk: name length (8), empty name, n_dims (4), one dim (8), type (4),
/// offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// Where one tensor's data lies in the file, and how to interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorExtent {
    /// The tensor name.
    pub name: String,
    /// Its ggml type.
    pub dtype: GgmlDType,
    /// Its shape in candle order (outermost first; GGUF stores the reverse).
    pub dims: Vec<usize>,
    /// Its offset relative to the start of the data section, as stored.
    pub offset: u64,
    /// Absolute byte position of its first byte.
    pub start: u64,
    /// Its size in bytes.
    pub len: u64,
}

/// A validated GGUF header: every tensor lies inside the file, aligned, without overlap.
#[derive(Debug)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Alignment of tensor data (`general.alignment`, default 32).
    pub alignment: u64,
    /// Length of the file the header was checked against.
    pub file_len: u64,
    /// Tensors in the order of the file's tensor table.
    pub tensors: Vec<TensorExtent>,
    /// candle's view of the header.
    pub content: Content,
    index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Where the tensor called `name` lies, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<&TensorExtent> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }
}

/// Parses and validates the header of an in-memory GGUF file; `label` names it in errors.
///
/// This is the whole validation [`super::GgufFile::open`] does, on a byte slice, so it can be
/// fuzzed and tested on every prefix of a file.
pub fn parse_header(bytes: &[u8], label: &Path) -> Result<GgufHeader, GgufError> {
    read_header(bytes, bytes.len() as u64, label)
}

/// Parses and validates a GGUF header read from `reader`, positioned at the start of a file of
/// `file_len` bytes. Nothing is allocated that the remaining bytes could not back.
pub fn read_header<R: Read>(reader: R, file_len: u64, path: &Path) -> Result<GgufHeader, GgufError> {
    let mut p = Parser {
        r: reader,
        pos: 0,
        len: file_len,
        path,
        what: String::from("magic"),
        elements_left: MAX_TOTAL_ARRAY_ELEMENTS,
    };
    let magic: [u8; 4] = p.bytes_n()?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { path: p.path_buf(), found: magic });
    }
    p.what = "version".into();
    let version = p.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { path: p.path_buf(), version });
    }
    p.what = "tensor_count".into();
    let tc_at = p.pos;
    let tensor_count = p.u64()?;
    p.what = "metadata_kv_count".into();
    let kv_at = p.pos;
    let kv_count = p.u64()?;
    p.check_count("tensor_count", tc_at, tensor_count, MAX_TENSORS, MIN_TENSOR_INFO_BYTES, 0)?;
    let reserved = tensor_count * MIN_TENSOR_INFO_BYTES; // bounded by the remaining bytes
    p.check_count("metadata_kv_count", kv_at, kv_count, MAX_KV, MIN_KV_BYTES, reserved)?;

    let metadata = p.metadata(kv_count)?;
    let alignment = alignment_of(&metadata, path)?;
    let mut tensors = Vec::with_capacity(small_cap(tensor_count));
    let mut index = HashMap::with_capacity(small_cap(tensor_count));
    for i in 0..tensor_count {
        let t = p.tensor_info(i, alignment, &index)?;
        index.insert(t.name.clone(), tensors.len());
        tensors.push(t);
    }
    let data_offset = p.pos.checked_next_multiple_of(alignment).unwrap_or(u64::MAX);
    place_tensors(&mut tensors, data_offset, file_len, path)?;

    let tensor_infos = tensors
        .iter()
        .map(|t| {
            let info = TensorInfo { ggml_dtype: t.dtype, shape: t.dims.clone().into(), offset: t.offset };
            (t.name.clone(), info)
        })
        .collect();
    let magic = if version == 2 { VersionedMagic::GgufV2 } else { VersionedMagic::GgufV3 };
    let content = Content { magic, metadata, tensor_infos, tensor_data_offset: data_offset };
    Ok(GgufHeader { version, alignment, file_len, tensors, content, index })
}

/// A capacity hint that a hostile count cannot inflate.
fn small_cap(count: u64) -> usize {
    count.min(4096) as usize
}

/// `general.alignment` if present: a `u32` power of two no larger than [`MAX_ALIGNMENT`].
fn alignment_of(metadata: &HashMap<String, Value>, path: &Path) -> Result<u64, GgufError> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() && u64::from(*a) <= MAX_ALIGNMENT => Ok(u64::from(*a)),
        Some(other) => {
            let found = match other {
                Value::Array(a) => format!("an array of {} elements", a.len()),
                Value::String(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
                v => format!("{v:?}"),
            };
            Err(GgufError::BadAlignment { path: path.to_path_buf(), found })
        }
    }
}

/// Sets each tensor's absolute start and checks it lies inside the file and overlaps no other.
fn place_tensors(tensors: &mut [TensorExtent], data_offset: u64, file_len: u64, path: &Path) -> Result<(), GgufError> {
    for t in tensors.iter_mut() {
        let start = data_offset.checked_add(t.offset);
        match start.and_then(|s| s.checked_add(t.len)) {
            Some(end) if end <= file_len => t.start = data_offset + t.offset,
            end => {
                return Err(GgufError::TensorOutOfBounds {
                    path: path.to_path_buf(),
                    name: t.name.clone(),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    let mut order: Vec<&TensorExtent> = tensors.iter().collect();
    order.sort_by_key(|t| t.start);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.start < a.start + a.len {
            return Err(GgufError::Overlap {
                path: path.to_path_buf(),
                first: a.name.clone(),
                first_end: a.start + a.len,
                second: b.name.clone(),
                offset: b.start,
            });
        }
    }
    Ok(())
}

/// One array being read: its element type, how many elements are still to come, those read.
struct Frame {
    elem: u32,
    left: u64,
    items: Vec<Value>,
}

/// A bounds-checked little-endian reader that knows how many bytes the file has left.
struct Parser<'a, R> {
    r: R,
    pos: u64,
    len: u64,
    path: &'a Path,
    /// The field being read, for error messages.
    what: String,
    /// Array elements the file may still declare in total.
    elements_left: u64,
}

impl<R: Read> Parser<'_, R> {
    fn path_buf(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn eof(&self, offset: u64, needed: u64) -> GgufError {
        GgufError::UnexpectedEof {
            path: self.path_buf(),
            offset,
            needed,
            available: self.len.saturating_sub(offset),
            what: self.what.clone(),
        }
    }

    /// Fills `buf` from the file, refusing to read past the declared end.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        let needed = buf.len() as u64;
        if needed > self.remaining() {
            return Err(self.eof(self.pos, needed));
        }
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += needed;
                Ok(())
            }
            // The file shrank while being read.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(self.eof(self.pos, needed)),
            Err(source) => Err(GgufError::Io { path: self.path_buf(), source }),
        }
    }

    fn bytes_n<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.bytes_n::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes_n()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes_n()?))
    }

    /// Rejects `count` entries of at least `min_size` bytes each when it exceeds `cap` or cannot
    /// fit in the bytes left once `reserved` bytes are set aside.
    fn check_count(
        &self,
        field: &'static str,
        offset: u64,
        count: u64,
        cap: u64,
        min_size: u64,
        reserved: u64,
    ) -> Result<(), GgufError> {
        let remaining = self.remaining();
        let fits = remaining.saturating_sub(reserved) / min_size;
        if count > cap || count > fits {
            return Err(GgufError::CountTooLarge { path: self.path_buf(), field, offset, count, cap, remaining, fits });
        }
        Ok(())
    }

    /// A length-prefixed UTF-8 string (trailing NUL bytes, which some writers add, are dropped).
    fn string(&mut self) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64()?;
        let remaining = self.remaining();
        let n = match usize::try_from(len) {
            Ok(n) if len <= remaining && len <= MAX_STRING_LEN => n,
            _ => {
                return Err(GgufError::StringTooLong {
                    path: self.path_buf(),
                    offset: at,
                    len,
                    remaining,
                    what: self.what.clone(),
                })
            }
        };
        let mut buf = vec![0u8; n];
        self.fill(&mut buf)?;
        while buf.last() == Some(&0) {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|e| GgufError::InvalidUtf8 {
            path: self.path_buf(),
            offset: at + 8 + e.utf8_error().valid_up_to() as u64,
            what: self.what.clone(),
        })
    }

    fn metadata(&mut self, kv_count: u64) -> Result<HashMap<String, Value>, GgufError> {
        let mut metadata = HashMap::with_capacity(small_cap(kv_count));
        for i in 0..kv_count {
            self.what = format!("key of metadata entry {i}");
            let key_at = self.pos;
            let key = self.string()?;
            if metadata.contains_key(&key) {
                return Err(GgufError::DuplicateKey { path: self.path_buf(), offset: key_at, key });
            }
            self.what = format!("metadata `{key}`");
            let type_at = self.pos;
            let ty = self.u32()?;
            let value = self.value(ty, type_at)?;
            metadata.insert(key, value);
        }
        Ok(metadata)
    }

    /// One value of type `ty` (whose code starts at `type_at`). Nested arrays are read with an
    /// explicit stack, never by recursion, and no deeper than [`MAX_ARRAY_DEPTH`].
    fn value(&mut self, ty: u32, type_at: u64) -> Result<Value, GgufError> {
        if ty != vt::ARRAY {
            return self.scalar(ty, type_at);
        }
        let mut stack = Vec::with_capacity(MAX_ARRAY_DEPTH);
        stack.push(self.array_header()?);
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else {
                // Unreachable: the loop returns when the outermost array completes.
                return Err(GgufError::InvalidValue {
                    path: self.path_buf(),
                    offset: type_at,
                    reason: "array stack emptied".into(),
                    what: self.what.clone(),
                });
            };
            if top.left == 0 {
                let done = Value::Array(std::mem::take(&mut top.items));
                stack.pop();
                match stack.last_mut() {
                    Some(parent) => parent.items.push(done),
                    None => return Ok(done),
                }
                continue;
            }
            top.left -= 1;
            let elem = top.elem;
            if elem == vt::ARRAY {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        path: self.path_buf(),
                        offset: self.pos,
                        max: MAX_ARRAY_DEPTH,
                        what: self.what.clone(),
                    });
                }
                let frame = self.array_header()?;
                stack.push(frame);
            } else {
                let v = self.scalar(elem, type_at)?;
                top.items.push(v);
            }
        }
    }

    /// An array's element type and length, checked against the caps and the bytes left.
    fn array_header(&mut self) -> Result<Frame, GgufError> {
        let at = self.pos;
        let elem = self.u32()?;
        let min = min_value_size(elem);
        if min == 0 {
            return Err(GgufError::UnknownValueType {
                path: self.path_buf(),
                offset: at,
                value_type: elem,
                what: self.what.clone(),
            });
        }
        let len = self.u64()?;
        let cap = MAX_ARRAY_LEN.min(self.elements_left);
        if len > cap {
            return Err(GgufError::ArrayTooLong {
                path: self.path_buf(),
                offset: at,
                len,
                cap,
                what: self.what.clone(),
            });
        }
        let needed = len.saturating_mul(min);
        if needed > self.remaining() {
            return Err(self.eof(self.pos, needed));
        }
        self.elements_left -= len;
        Ok(Frame { elem, left: len, items: Vec::with_capacity(small_cap(len)) })
    }

    fn scalar(&mut self, ty: u32, type_at: u64) -> Result<Value, GgufError> {
        let at = self.pos;
        Ok(match ty {
            vt::U8 => Value::U8(self.u8()?),
            vt::I8 => Value::I8(i8::from_le_bytes(self.bytes_n()?)),
            vt::U16 => Value::U16(u16::from_le_bytes(self.bytes_n()?)),
            vt::I16 => Value::I16(i16::from_le_bytes(self.bytes_n()?)),
            vt::U32 => Value::U32(self.u32()?),
            vt::I32 => Value::I32(i32::from_le_bytes(self.bytes_n()?)),
            vt::F32 => Value::F32(f32::from_le_bytes(self.bytes_n()?)),
            vt::U64 => Value::U64(self.u64()?),
            vt::I64 => Value::I64(i64::from_le_bytes(self.bytes_n()?)),
            vt::F64 => Value::F64(f64::from_le_bytes(self.bytes_n()?)),
            vt::BOOL => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::InvalidValue {
                        path: self.path_buf(),
                        offset: at,
                        reason: format!("bool byte is {b}, expected 0 or 1"),
                        what: self.what.clone(),
                    })
                }
            },
            vt::STRING => Value::String(self.string()?),
            other => {
                return Err(GgufError::UnknownValueType {
                    path: self.path_buf(),
                    offset: type_at,
                    value_type: other,
                    what: self.what.clone(),
                })
            }
        })
    }

    /// One tensor info entry, validated on its own (placement is checked once all are read).
    fn tensor_info(
        &mut self,
        i: u64,
        alignment: u64,
        seen: &HashMap<String, usize>,
    ) -> Result<TensorExtent, GgufError> {
        self.what = format!("name of tensor info {i}");
        let name_at = self.pos;
        let name = self.string()?;
        if seen.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { path: self.path_buf(), offset: name_at, name });
        }
        self.what = format!("tensor `{name}`");
        let invalid = |p: &Self, offset: u64, reason: String| GgufError::InvalidDims {
            path: p.path_buf(),
            offset,
            name: name.clone(),
            reason,
        };
        let nd_at = self.pos;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(invalid(self, nd_at, format!("{n_dims} dimensions (expected 1 to {MAX_DIMS})")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let at = self.pos;
            let v = self.u64()?;
            if v == 0 || v > i64::MAX as u64 {
                return Err(invalid(self, at, format!("dimension {d} is {v} (expected 1 to 2^63-1)")));
            }
            ne.push(v);
        }
        let type_at = self.pos;
        let code = self.u32()?;
        let dtype = match dtype_from_code(code) {
            DTypeCode::Loadable(d) => d,
            DTypeCode::Unsupported(dtype) => {
                return Err(GgufError::UnsupportedDType { path: self.path_buf(), name, dtype: dtype.into() })
            }
            DTypeCode::Unknown => {
                return Err(GgufError::UnknownDType { path: self.path_buf(), offset: type_at, name, code })
            }
        };
        let offset = self.u64()?;

        let overflow = |p: &Self| GgufError::ShapeOverflow { path: p.path_buf(), name: name.clone(), dims: ne.clone() };
        let elems = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(|| overflow(self))?;
        let block = dtype.block_size() as u64;
        if !ne[0].is_multiple_of(block) {
            return Err(GgufError::BlockMismatch {
                path: self.path_buf(),
                name,
                ne0: ne[0],
                block_size: block,
                dtype: format!("{dtype:?}"),
            });
        }
        let len = tensor_bytes(dtype, elems).ok_or_else(|| overflow(self))?;
        usize::try_from(elems).map_err(|_| overflow(self))?;
        usize::try_from(len).map_err(|_| overflow(self))?;
        if offset % alignment != 0 {
            return Err(GgufError::Misaligned { path: self.path_buf(), name, offset, alignment });
        }
        // Every dim fits in usize: each is at most the element count, which fits.
        let dims = ne.iter().rev().map(|&d| d as usize).collect();
        Ok(TensorExtent { name, dtype, dims, offset, start: 0, len })
    }
}
