//! The bounded parser of a `model.bin` held in memory: every count and length is checked
//! against the bytes left before it is used, so a hostile file can only cost the memory of its
//! own size.

use std::collections::HashMap;

use super::model::{Ct2Spec, Variable};
use super::{Ct2DType, Ct2ErrorKind, ExpectedBytes, MAX_VERSION};

/// Fewest bytes a non-empty string takes: the `u16` length, one byte and the NUL.
const MIN_STRING: usize = 4;
/// Fewest bytes one variable record takes: name, rank, dtype and byte count (a scalar).
const MIN_VARIABLE: usize = MIN_STRING + 1 + 1 + 4;
/// Fewest bytes one alias record takes: two names.
const MIN_ALIAS: usize = 2 * MIN_STRING;

/// Everything a `model.bin` declares; variables point into the parsed bytes.
pub(super) struct Parsed {
    pub version: u32,
    pub spec: Option<Ct2Spec>,
    pub variables: Vec<Variable>,
    /// `(alias, variable name)` pairs, in file order.
    pub aliases: Vec<(String, String)>,
    /// Every variable and alias name to the index of its variable.
    pub index: HashMap<String, usize>,
}

/// Parses a whole `model.bin`.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, Ct2ErrorKind> {
    let mut c = Cursor { bytes, pos: 0 };
    let version = c.u32(|| "the format version".into())?;
    if version == 0 || version > MAX_VERSION {
        return Err(Ct2ErrorKind::Version { found: version });
    }
    let spec = if version >= 2 {
        let name = c.string(|| "the spec name".into())?;
        let revision = c.u32(|| "the spec revision".into())?;
        Some(Ct2Spec { name, revision })
    } else {
        None
    };
    let count = c.count(MIN_VARIABLE, || "the variable count".into())?;
    let mut variables = Vec::with_capacity(count);
    let mut index = HashMap::with_capacity(count);
    for i in 0..count {
        let var = c.variable(i, version)?;
        if index.insert(var.name.clone(), i).is_some() {
            return Err(Ct2ErrorKind::DuplicateName { name: var.name });
        }
        variables.push(var);
    }
    let mut aliases = Vec::new();
    if version >= 3 {
        let n = c.count(MIN_ALIAS, || "the alias count".into())?;
        aliases.reserve(n);
        for i in 0..n {
            let alias = c.string(|| format!("alias #{i} name"))?;
            let target = c.string(|| format!("alias #{i} target"))?;
            let Some(&at) = index.get(&target) else {
                return Err(Ct2ErrorKind::BadAlias { alias, target });
            };
            if index.insert(alias.clone(), at).is_some() {
                return Err(Ct2ErrorKind::DuplicateName { name: alias });
            }
            aliases.push((alias, target));
        }
    }
    if c.left() > 0 {
        return Err(Ct2ErrorKind::TrailingBytes { offset: c.pos as u64, count: c.left() as u64 });
    }
    Ok(Parsed { version, spec, variables, aliases, index })
}

/// A position in the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Bytes from the position to the end.
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The error for `what` needing `needed` bytes here.
    fn truncated(&self, what: String, needed: u64) -> Ct2ErrorKind {
        Ct2ErrorKind::Truncated { what, offset: self.pos as u64, needed, left: self.left() as u64 }
    }

    /// The next `n` bytes, for the field `what`.
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], Ct2ErrorKind> {
        if n > self.left() {
            return Err(self.truncated(what(), n as u64));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N], Ct2ErrorKind> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, Ct2ErrorKind> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, Ct2ErrorKind> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, Ct2ErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A `u32` count of records of at least `min_each` bytes, checked against the bytes left.
    fn count(&mut self, min_each: usize, what: impl Fn() -> String) -> Result<usize, Ct2ErrorKind> {
        let at = self.pos;
        let n = self.u32(&what)? as u64;
        let needed = n * min_each as u64;
        if needed > self.left() as u64 {
            self.pos = at;
            return Err(Ct2ErrorKind::Truncated {
                what: format!("{} ({n} records of at least {min_each} bytes)", what()),
                offset: at as u64,
                needed: needed + 4,
                left: self.left() as u64,
            });
        }
        Ok(n as usize)
    }

    /// A string: `u16` length counting the closing NUL, the UTF-8 bytes, the NUL.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, Ct2ErrorKind> {
        let at = self.pos as u64;
        let bad = |reason| Ct2ErrorKind::BadString { what: what(), offset: at, reason };
        let len = self.u16(&what)? as usize;
        if len < 2 {
            return Err(bad("empty (the length counts a closing NUL, so it is at least 2)"));
        }
        let raw = self.take(len, &what)?;
        let (text, nul) = raw.split_at(len - 1);
        if nul != [0] {
            return Err(bad("does not end in a NUL byte"));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("not valid UTF-8"))?;
        Ok(text.to_string())
    }

    /// Variable record `i`, in the layout of format `version`.
    fn variable(&mut self, i: usize, version: u32) -> Result<Variable, Ct2ErrorKind> {
        let name = self.string(|| format!("variable #{i} name"))?;
        let rank = self.u8(|| format!("variable `{name}` rank"))? as usize;
        let dims = self.take(rank * 4, || format!("variable `{name}` shape ({rank} dimensions)"))?;
        let shape: Vec<u64> =
            dims.chunks_exact(4).map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as u64).collect();
        let (dtype, stored) = if version >= 4 {
            let code = self.u8(|| format!("variable `{name}` dtype"))?;
            let dtype =
                Ct2DType::from_code(code).ok_or_else(|| Ct2ErrorKind::UnknownDType { name: name.clone(), code })?;
            (dtype, self.u32(|| format!("variable `{name}` byte count"))? as u64)
        } else {
            // Before version 4 the file stores the item size and the element count.
            let item = self.u8(|| format!("variable `{name}` item size"))?;
            let dtype = match item {
                4 => Ct2DType::F32,
                2 => Ct2DType::I16,
                1 => Ct2DType::I8,
                _ => return Err(Ct2ErrorKind::UnknownDType { name, code: item }),
            };
            (dtype, self.u32(|| format!("variable `{name}` element count"))? as u64 * item as u64)
        };
        let expected = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
            .map_or(ExpectedBytes::Overflow, ExpectedBytes::Bytes);
        if expected != ExpectedBytes::Bytes(stored) {
            return Err(Ct2ErrorKind::SizeMismatch { name, shape: shape.into(), dtype, expected, found: stored });
        }
        let offset = self.pos;
        let data = || format!("variable `{name}` data");
        let len = usize::try_from(stored).map_err(|_| self.truncated(data(), stored))?;
        self.take(len, data)?;
        let shape = shape.into_iter().map(|d| d as usize).collect();
        Ok(Variable { name, shape, dtype, offset, len })
    }
}
