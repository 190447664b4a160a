//! A parsed `model.bin`: its spec, its variables and aliases, and the variables as candle
//! tensors (float weights in a chosen dtype, quantized weights with their scales applied, fused
//! projections split into their parts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{reader, Ct2DType, Ct2Error, Ct2ErrorKind};
use crate::Result;

/// The model specification a `model.bin` was written for (format version 2 and later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Spec {
    /// The spec's class name (`WhisperSpec`, `TransformerSpec`, ...): which network it holds.
    pub name: String,
    /// The spec's revision: the naming and layout of its variables changed between revisions.
    pub revision: u32,
}

/// One variable of a `model.bin`: its name, shape, dtype and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Its name (`encoder/layer_0/self_attention/linear_0/weight`).
    pub name: String,
    /// Its shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: Ct2DType,
    /// Offset of its bytes in the file.
    pub(super) offset: usize,
    /// Its byte count (checked against the shape and dtype).
    pub(super) len: usize,
}

impl Variable {
    /// Its byte count.
    pub fn num_bytes(&self) -> usize {
        self.len
    }

    /// Its element count (1 for a scalar).
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A validated CTranslate2 `model.bin`, held in memory.
#[derive(Debug)]
pub struct Ct2Model {
    path: PathBuf,
    bytes: Vec<u8>,
    version: u32,
    spec: Option<Ct2Spec>,
    variables: Vec<Variable>,
    aliases: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Ct2Model {
    /// Reads and validates the `model.bin` at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Ct2Error> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| Ct2Error { path: path.to_path_buf(), kind: Ct2ErrorKind::Io(e) })?;
        Self::from_bytes(bytes, path)
    }

    /// Validates a whole `model.bin` held in memory; `label` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: &Path) -> Result<Self, Ct2Error> {
        let parsed = reader::parse(&bytes).map_err(|kind| Ct2Error { path: label.to_path_buf(), kind })?;
        Ok(Ct2Model {
            path: label.to_path_buf(),
            bytes,
            version: parsed.version,
            spec: parsed.spec,
            variables: parsed.variables,
            aliases: parsed.aliases,
            index: parsed.index,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (1 to [`super::MAX_VERSION`]).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The spec name and revision; `None` for format version 1, which stores neither.
    pub fn spec(&self) -> Option<&Ct2Spec> {
        self.spec.as_ref()
    }

    /// The variables, in file order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The `(alias, variable name)` pairs, in file order.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// The variable called `name`, directly or through an alias.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.index.get(name).map(|&i| &self.variables[i])
    }

    /// The raw little-endian bytes of variable `name` (directly or through an alias).
    pub fn raw_bytes(&self, name: &str) -> Option<&[u8]> {
        self.variable(name).map(|v| &self.bytes[v.offset..v.offset + v.len])
    }

    /// The error `kind` about this file.
    pub(super) fn error(&self, kind: Ct2ErrorKind) -> crate::GraftError {
        Ct2Error { path: self.path.clone(), kind }.into()
    }

    /// The variable `name`, or a [`Ct2ErrorKind::Missing`] error.
    pub(super) fn need(&self, name: &str) -> Result<&Variable> {
        self.variable(name).ok_or_else(|| self.error(Ct2ErrorKind::Missing { name: name.to_string() }))
    }

    /// Variable `name` as stored, on `device`: float types converted to `float_dtype`, integer
    /// types as `I64` (exact), scalars with an empty shape.
    pub fn tensor(&self, name: &str, device: &Device, float_dtype: DType) -> Result<Tensor> {
        let v = self.need(name)?;
        let bytes = &self.bytes[v.offset..v.offset + v.len];
        let shape = v.shape.clone();
        let t = match v.dtype {
            Ct2DType::F32 => Tensor::from_vec(le_values(bytes, f32::from_le_bytes), shape, device)?,
            Ct2DType::F16 => Tensor::from_vec(le_values(bytes, half::f16::from_le_bytes), shape, device)?,
            Ct2DType::BF16 => Tensor::from_vec(le_values(bytes, half::bf16::from_le_bytes), shape, device)?,
            Ct2DType::I8 => Tensor::from_vec(bytes.iter().map(|&b| b as i8 as i64).collect::<Vec<_>>(), shape, device)?,
            Ct2DType::I16 => Tensor::from_vec(le_values(bytes, |b| i16::from_le_bytes(b) as i64), shape, device)?,
            Ct2DType::I32 => Tensor::from_vec(le_values(bytes, |b| i32::from_le_bytes(b) as i64), shape, device)?,
        };
        Ok(if v.dtype.is_float() { t.to_dtype(float_dtype)? } else { t })
    }

    /// Every variable, then every alias (sharing its variable's tensor), as [`Self::tensor`]
    /// reads them; quantization scales stay separate variables (`<name>_scale`).
    pub fn tensors(&self, device: &Device, float_dtype: DType) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.variables.len() + self.aliases.len());
        for v in &self.variables {
            out.push((v.name.clone(), self.tensor(&v.name, device, float_dtype)?));
        }
        for (alias, target) in &self.aliases {
            let t = out.iter().find(|(n, _)| n == target).map(|(_, t)| t.clone());
            let t = match t {
                Some(t) => t,
                None => self.tensor(target, device, float_dtype)?,
            };
            out.push((alias.clone(), t));
        }
        Ok(out)
    }

    /// Weight `name` as floats of `dtype`: a float variable converted, an int8 / int16
    /// variable divided by its `<name>_scale` (one scale per row, or one for the whole weight),
    /// as CTranslate2 quantizes (`q = round(w * scale)`).
    pub fn weight(&self, name: &str, device: &Device, dtype: DType) -> Result<Tensor> {
        let v = self.need(name)?;
        if v.dtype.is_float() {
            return self.tensor(name, device, dtype);
        }
        // An alias shares its variable's scale, as CTranslate2 registers it.
        let canonical = v.name.clone();
        let bad = |reason: String| self.error(Ct2ErrorKind::Variable { name: name.to_string(), reason });
        if self.variable(&format!("{canonical}_zero")).is_some() {
            return Err(bad("has a zero point (`_zero`); only scale-quantized weights are read".into()));
        }
        let scale_name = format!("{canonical}_scale");
        let Some(scale) = self.variable(&scale_name) else {
            return Err(bad(format!("is {} without a `{scale_name}` variable to dequantize it", v.dtype.as_str())));
        };
        let q = self.tensor(&canonical, device, DType::F32)?.to_dtype(DType::F32)?;
        let s = self.tensor(&scale_name, device, DType::F32)?;
        let s = match (scale.elem_count(), v.shape.first()) {
            (1, _) => s.reshape(())?,
            (n, Some(&rows)) if n == rows => {
                let mut shape = vec![1usize; v.shape.len()];
                shape[0] = rows;
                s.reshape(shape)?
            }
            (n, _) => {
                return Err(bad(format!(
                    "its scale has {n} values for shape {:?} (one per row or one in all)",
                    v.shape
                )))
            }
        };
        Ok(q.broadcast_div(&s)?.to_dtype(dtype)?)
    }

    /// The integer scalar `name` (a setting such as `encoder/num_heads`).
    pub fn scalar_i64(&self, name: &str) -> Result<i64> {
        let v = self.need(name)?;
        if !v.shape.is_empty() || v.dtype.is_float() {
            let reason = format!("is {} of shape {:?}, not an integer scalar", v.dtype.as_str(), v.shape);
            return Err(self.error(Ct2ErrorKind::Variable { name: name.to_string(), reason }));
        }
        Ok(self.tensor(name, &Device::Cpu, DType::F32)?.to_scalar::<i64>()?)
    }

    /// Splits the fused linear `linear` (its `weight` rows and, when present, its `bias`) into
    /// `parts.len()` equal blocks of rows named `<parent>/<part>/weight` and `<part>/bias`:
    /// CTranslate2 stores self-attention as one `[3d, d]` linear (`linear_0` = q, k, v) and
    /// cross-attention keys and values as one `[2d, d]` linear (`linear_1` = k, v).
    pub fn split_fused(
        &self,
        linear: &str,
        parts: &[&str],
        device: &Device,
        dtype: DType,
    ) -> Result<Vec<(String, Tensor)>> {
        let parent = linear.rsplit_once('/').map_or("", |(p, _)| p);
        let mut out = Vec::with_capacity(2 * parts.len());
        for field in ["weight", "bias"] {
            let name = format!("{linear}/{field}");
            if field == "bias" && self.variable(&name).is_none() {
                continue;
            }
            let t = self.weight(&name, device, dtype)?;
            let rows = t.dims().first().copied().unwrap_or(0);
            if parts.is_empty() || rows % parts.len() != 0 {
                let reason = format!("{rows} rows cannot be split into {} equal parts", parts.len());
                return Err(self.error(Ct2ErrorKind::Variable { name, reason }));
            }
            let each = rows / parts.len();
            for (i, part) in parts.iter().enumerate() {
                let piece = t.narrow(0, i * each, each)?;
                let named =
                    if parent.is_empty() { format!("{part}/{field}") } else { format!("{parent}/{part}/{field}") };
                out.push((named, piece));
            }
        }
        Ok(out)
    }
}

/// Decodes `bytes` as consecutive little-endian values of `N` bytes each.
fn le_values<const N: usize, T>(bytes: &[u8], decode: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            decode(a)
        })
        .collect()
}
