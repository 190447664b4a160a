//! PyTorch checkpoints as named tensors: legacy `torch.save` files (torch < 1.6, a sequence of
//! pickles followed by raw storages), zip-format `.pth` / `.pt` files and safetensors, through one
//! entry point, [`read_tensors`].
//!
//! Pickles are read by a bounded reader ([`pickle`]) that builds values and never executes
//! anything: only a state dict's callables are allowed, so a hostile checkpoint is refused with a
//! [`TorchError`] naming what it tried to call. Every size is checked against the bytes actually
//! present before anything is allocated. Storages are read as stored (little-endian); tensors are
//! copied out of them with their offsets and strides checked against the storage.

mod legacy;
pub mod pickle;
pub mod value;
mod zipped;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use value::{TensorRef, Value};

/// A PyTorch checkpoint that could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct TorchError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: TorchErrorKind,
}

/// What is wrong with a PyTorch checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum TorchErrorKind {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The file ends inside a pickle or a storage.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// How many bytes it needed beyond the end.
        needed: usize,
    },
    /// The pickle names a callable that a state dict does not need (it is never called).
    #[error("refused: the pickle at offset {offset} names `{module}.{name}`, which is not part of a state dict (only tensors, storages and OrderedDict are read; nothing is executed)")]
    Disallowed {
        /// Offset of the GLOBAL opcode.
        offset: usize,
        /// The module it names.
        module: String,
        /// The callable it names.
        name: String,
    },
    /// A pickle is malformed or uses something this reader does not support.
    #[error("bad pickle at offset {offset}: {what}")]
    Pickle {
        /// Offset of the opcode.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// The file's layout around the pickles is wrong (magic number, storage table).
    #[error("{0}")]
    Layout(String),
    /// The checkpoint holds something other than a dict of tensors.
    #[error("not a state dict: {0}")]
    NotStateDict(String),
    /// A tensor does not fit its storage.
    #[error("tensor `{name}`: {what}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The file is none of the formats read here.
    #[error("not a PyTorch checkpoint (legacy or zip) nor a safetensors file")]
    UnknownFormat,
}

/// Raw little-endian bytes of each storage, by key.
type Storages<'a> = HashMap<String, std::borrow::Cow<'a, [u8]>>;

/// Reads every tensor of the checkpoint at `path` — legacy `torch.save`, zip-format `.pth` or
/// safetensors, told apart by their first bytes — onto `device`, in file order (sorted by name
/// for safetensors, which keeps none).
pub fn read_tensors(path: impl AsRef<Path>, device: &Device) -> crate::Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let err = |kind| TorchError { path: path.to_path_buf(), kind };
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| err(TorchErrorKind::Io(e)))?;
        f.read(&mut head).map_err(|e| err(TorchErrorKind::Io(e)))?
    };
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        return Ok(zipped::read(path, device).map_err(err)?);
    }
    if head.starts_with(&legacy::MAGIC[..4]) {
        let bytes = std::fs::read(path).map_err(|e| err(TorchErrorKind::Io(e)))?;
        return Ok(legacy::read(&bytes, device).map_err(err)?);
    }
    if n == 8 {
        let sf = crate::io::safetensors::open_safetensors(path)?;
        let mut names: Vec<String> = sf.names().into_iter().map(str::to_string).collect();
        names.sort();
        return names
            .into_iter()
            .map(|name| {
                let t = sf.tensor(&name, device)?;
                Ok((name, t))
            })
            .collect();
    }
    Err(err(TorchErrorKind::UnknownFormat).into())
}

/// The tensors of a state dict: the top-level dict itself, or the dict under `state_dict` /
/// `model` / `model_state_dict` of a training checkpoint.
fn state_dict(top: &Value) -> Result<Vec<(String, TensorRef)>, TorchErrorKind> {
    let Value::Dict(dict) = top else {
        return Err(TorchErrorKind::NotStateDict(format!("the checkpoint holds a {}", top.type_name())));
    };
    if let Some(tensors) = tensor_entries(&dict.items) {
        return Ok(tensors);
    }
    for key in ["state_dict", "model_state_dict", "model"] {
        let inner = dict.items.iter().find(|(k, _)| k.as_str() == Some(key));
        if let Some((_, Value::Dict(inner))) = inner {
            if let Some(tensors) = tensor_entries(&inner.items) {
                return Ok(tensors);
            }
        }
    }
    let keys: Vec<String> =
        dict.items.iter().take(8).map(|(k, v)| format!("{} ({})", k.as_str().unwrap_or("?"), v.type_name())).collect();
    Err(TorchErrorKind::NotStateDict(format!(
        "a dict whose entries are not all tensors, and no `state_dict` / `model` dict of tensors in it; entries: {}",
        keys.join(", ")
    )))
}

/// `(name, tensor)` for every entry when all keys are strings and all values tensors.
fn tensor_entries(items: &[(Value, Value)]) -> Option<Vec<(String, TensorRef)>> {
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => Some((name.to_string(), (**t).clone())),
            _ => None,
        })
        .collect()
}

/// How many times the storages' bytes the tensors may add up to (tied weights view one storage
/// twice; zero strides or many views of one storage could otherwise blow a small file up).
const MAX_EXPANSION: u64 = 4;

/// Copies each tensor out of its storage onto `device`, after checking that all of them together
/// need at most [`MAX_EXPANSION`] times the storages' bytes (plus 64 MiB).
fn materialize(
    tensors: Vec<(String, TensorRef)>,
    storages: &Storages<'_>,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TorchErrorKind> {
    let stored: u64 = storages.values().map(|b| b.len() as u64).sum();
    let limit = stored.saturating_mul(MAX_EXPANSION).saturating_add(64 << 20);
    let wanted = tensors.iter().try_fold(0u64, |sum, (_, t)| {
        let n = t.shape.iter().try_fold(t.storage.dtype.size_in_bytes() as u64, |a, &d| a.checked_mul(d as u64))?;
        sum.checked_add(n)
    });
    if wanted.is_none_or(|w| w > limit) {
        return Err(TorchErrorKind::Layout(format!(
            "the tensors need {} bytes, more than {MAX_EXPANSION} times the {stored} bytes stored",
            wanted.map_or("more than 2^64".to_string(), |w| w.to_string())
        )));
    }
    tensors
        .into_iter()
        .map(|(name, t)| {
            let bytes = storages.get(&t.storage.key).ok_or_else(|| TorchErrorKind::Tensor {
                name: name.clone(),
                what: format!("its storage `{}` is not in the file", t.storage.key),
            })?;
            let data = strided_bytes(&t, bytes).map_err(|what| TorchErrorKind::Tensor { name: name.clone(), what })?;
            let tensor = Tensor::from_raw_buffer(&data, t.storage.dtype, &t.shape, device)
                .map_err(|e| TorchErrorKind::Tensor { name: name.clone(), what: e.to_string() })?;
            Ok((name, tensor))
        })
        .collect()
}

/// The tensor's elements in row-major order, read from `storage` (the whole storage's bytes)
/// after checking that every element it addresses lies inside the storage (or its view).
fn strided_bytes(t: &TensorRef, storage: &[u8]) -> Result<Vec<u8>, String> {
    let elem = t.storage.dtype.size_in_bytes();
    let (view_start, view_len) = t.storage.view.unwrap_or((0, t.storage.numel));
    let storage_numel = storage.len() / elem;
    if view_start.checked_add(view_len).is_none_or(|end| end > storage_numel) {
        return Err(format!("storage view {view_start}+{view_len} exceeds the storage's {storage_numel} elements"));
    }
    let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("element count overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| a.checked_add(x)))
        .ok_or("offsets overflow")?;
    if last >= view_len {
        return Err(format!(
            "shape {:?} strides {:?} offset {} reach element {last} of a storage of {view_len}",
            t.shape, t.stride, t.offset
        ));
    }
    let base = view_start + t.offset;
    let contiguous = {
        let mut expect = 1usize;
        t.shape.iter().zip(&t.stride).rev().all(|(&d, &s)| {
            let ok = d == 1 || s == expect;
            expect *= d;
            ok
        })
    };
    if contiguous {
        return Ok(storage[base * elem..(base + numel) * elem].to_vec());
    }
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = base + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
        for dim in (0..index.len()).rev() {
            index[dim] += 1;
            if index[dim] < t.shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
    Ok(out)
}

/// Checks that every storage a tensor names has one dtype and element count.
fn storage_table(
    list: &[std::rc::Rc<value::StorageRef>],
) -> Result<HashMap<String, (candle_core::DType, usize)>, TorchErrorKind> {
    let mut table = HashMap::new();
    for s in list {
        match table.insert(s.key.clone(), (s.dtype, s.numel)) {
            Some(prev) if prev != (s.dtype, s.numel) => {
                return Err(TorchErrorKind::Layout(format!(
                    "storage `{}` is named as {:?}x{} and as {:?}x{}",
                    s.key, prev.0, prev.1, s.dtype, s.numel
                )))
            }
            _ => {}
        }
    }
    Ok(table)
}
