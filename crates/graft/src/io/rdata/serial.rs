//! R's serialization format, XDR flavour (`X\n`, big-endian), versions 2 and 3: the subset that
//! holds data — vectors of logicals, integers, doubles and strings, lists, pairlists with their
//! tags, attributes, symbols and references to symbols.
//!
//! An item is a 32-bit flags word — type in the low byte, `is object` bit 8, `has attributes`
//! bit 9, `has tag` bit 10, `levels` (string encodings) from bit 12 — then its body. Vectors
//! carry their attributes after the elements, pairlist cells before their tag and value.

use super::{Limits, RDataError};

/// An R value with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct RObject {
    /// The value.
    pub value: RValue,
    /// Attributes in file order (`names`, `class`, `levels`, `row.names`, ...).
    pub attributes: Vec<(String, RObject)>,
}

/// The kinds of R value the reader builds; `None` elements are R's `NA`.
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    /// `NULL`.
    Null,
    /// A symbol (a name).
    Symbol(String),
    /// A logical vector.
    Logical(Vec<Option<bool>>),
    /// An integer vector (also the codes of a factor).
    Integer(Vec<Option<i32>>),
    /// A double vector (R's `NA_real_` stays a NaN).
    Real(Vec<f64>),
    /// A character vector.
    Character(Vec<Option<String>>),
    /// A generic vector (`list()`) or an expression vector.
    List(Vec<RObject>),
    /// A pairlist: `(tag, value)` cells.
    Pairlist(Vec<(Option<String>, RObject)>),
}

impl RObject {
    /// The attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&RObject> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The elements of a character vector.
    pub fn strings(&self) -> Option<&[Option<String>]> {
        match &self.value {
            RValue::Character(s) => Some(s),
            _ => None,
        }
    }

    /// The `names` attribute, when it is a character vector.
    pub fn names(&self) -> Option<&[Option<String>]> {
        self.attribute("names")?.strings()
    }

    /// The element of a named list called `name`.
    pub fn get(&self, name: &str) -> Option<&RObject> {
        let RValue::List(items) = &self.value else { return None };
        let i = self.names()?.iter().position(|n| n.as_deref() == Some(name))?;
        items.get(i)
    }
}

/// Flags bits and the SEXP types read.
const HAS_ATTR: u32 = 1 << 9;
const HAS_TAG: u32 = 1 << 10;
const SYMSXP: u32 = 1;
const LISTSXP: u32 = 2;
const CHARSXP: u32 = 9;
const LGLSXP: u32 = 10;
const INTSXP: u32 = 13;
const REALSXP: u32 = 14;
const STRSXP: u32 = 16;
const VECSXP: u32 = 19;
const EXPRSXP: u32 = 20;
const NILVALUE_SXP: u32 = 254;
const REFSXP: u32 = 255;

/// The `levels` bits of a CHARSXP that name its encoding.
const BYTES_MASK: u32 = 1 << 1;
const LATIN1_MASK: u32 = 1 << 2;
const UTF8_MASK: u32 = 1 << 3;
const ASCII_MASK: u32 = 1 << 6;

/// R's `NA_integer_` (and the NA of logicals).
const NA_INT: i32 = i32::MIN;

/// Longest native-encoding name accepted in a version-3 header.
const MAX_ENCODING_NAME: usize = 64;

/// Reads one XDR R serialization (`X\n` header, version 2 or 3) holding one item; bytes after it
/// are an error.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<RObject, RDataError> {
    if bytes.len() > limits.max_bytes {
        return Err(RDataError::BadLength {
            offset: 0,
            what: format!("{} bytes is over the limit of {}", bytes.len(), limits.max_bytes),
        });
    }
    let mut r = Reader { buf: bytes, pos: 0, limits: *limits, symbols: Vec::new(), native_latin1: false };
    r.header()?;
    let item = r.item(0)?;
    match bytes.len() - r.pos {
        0 => Ok(item),
        extra => Err(RDataError::TrailingBytes(extra)),
    }
}

/// A cursor over the serialized bytes with the reference table (symbols, in reading order).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
    symbols: Vec<String>,
    /// The writer's native encoding is latin-1: strings without an encoding flag are latin-1.
    native_latin1: bool,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RDataError> {
        if n > self.remaining() {
            return Err(RDataError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn int(&mut self) -> Result<i32, RDataError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn header(&mut self) -> Result<(), RDataError> {
        let magic = self.take(2)?;
        match magic {
            b"X\n" => {}
            b"A\n" | b"B\n" => {
                return Err(RDataError::BadHeader(
                    "the ASCII and native-binary formats are not read; save with xdr = TRUE (R's default)".into(),
                ))
            }
            other => return Err(RDataError::BadHeader(format!("starts with {other:02x?}, expected `X\\n`"))),
        }
        let version = self.int()?;
        if !(2..=3).contains(&version) {
            return Err(RDataError::BadHeader(format!("format version {version}; versions 2 and 3 are read")));
        }
        let _writer_version = self.int()?;
        let _min_reader_version = self.int()?;
        if version == 3 {
            let at = self.pos;
            let n = self.int()?;
            let n = usize::try_from(n).ok().filter(|&n| n <= MAX_ENCODING_NAME).ok_or_else(|| {
                RDataError::BadLength { offset: at, what: format!("native encoding name of {n} bytes") }
            })?;
            let name = self.take(n)?;
            self.native_latin1 = matches!(
                name.to_ascii_lowercase().as_slice(),
                b"latin1" | b"iso-8859-1" | b"iso8859-1" | b"iso_8859-1"
            );
        }
        Ok(())
    }

    /// A vector length: one int, or `-1` then two ints (upper and lower 32 bits).
    fn length(&mut self) -> Result<usize, RDataError> {
        let at = self.pos;
        let n = self.int()?;
        let n = match n {
            -1 => {
                let upper = self.int()? as u32 as u64;
                let lower = self.int()? as u32 as u64;
                (upper << 32) | lower
            }
            n if n < 0 => return Err(RDataError::BadLength { offset: at, what: format!("negative length {n}") }),
            n => n as u64,
        };
        usize::try_from(n).map_err(|_| RDataError::BadLength { offset: at, what: format!("length {n}") })
    }

    /// Checks that `n` elements of at least `each` bytes can still be in the input, before any
    /// allocation of `n` elements.
    fn check_count(&self, at: usize, n: usize, each: usize) -> Result<(), RDataError> {
        match n.checked_mul(each) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(RDataError::BadLength {
                offset: at,
                what: format!("{n} elements of at least {each} bytes each, but {} bytes are left", self.remaining()),
            }),
        }
    }

    fn item(&mut self, depth: usize) -> Result<RObject, RDataError> {
        if depth > self.limits.max_depth {
            return Err(RDataError::TooDeep(self.limits.max_depth));
        }
        let at = self.pos;
        let flags = self.int()? as u32;
        let plain = |value| RObject { value, attributes: Vec::new() };
        let value = match flags & 0xff {
            NILVALUE_SXP => return Ok(plain(RValue::Null)),
            REFSXP => return self.reference(at, flags).map(plain),
            SYMSXP => {
                let name = self.charsxp()?.ok_or_else(|| unsupported(at, "a symbol whose name is NA"))?;
                self.symbols.push(name.clone());
                return Ok(plain(RValue::Symbol(name)));
            }
            LISTSXP => return self.pairlist(flags, depth),
            LGLSXP => RValue::Logical(self.ints(|v| (v != NA_INT).then_some(v != 0))?),
            INTSXP => RValue::Integer(self.ints(|v| (v != NA_INT).then_some(v))?),
            REALSXP => {
                let len_at = self.pos;
                let n = self.length()?;
                self.check_count(len_at, n, 8)?;
                let bytes = self.take(n * 8)?;
                RValue::Real(
                    bytes
                        .chunks_exact(8)
                        .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                        .collect(),
                )
            }
            STRSXP => {
                let len_at = self.pos;
                let n = self.length()?;
                self.check_count(len_at, n, 8)?;
                RValue::Character((0..n).map(|_| self.charsxp()).collect::<Result<_, _>>()?)
            }
            VECSXP | EXPRSXP => {
                let len_at = self.pos;
                let n = self.length()?;
                self.check_count(len_at, n, 4)?;
                RValue::List((0..n).map(|_| self.item(depth + 1)).collect::<Result<_, _>>()?)
            }
            other => return Err(unsupported(at, &format!("type {other} ({})", type_name(other)))),
        };
        let attributes = if flags & HAS_ATTR != 0 { self.attributes(depth + 1)? } else { Vec::new() };
        Ok(RObject { value, attributes })
    }

    /// A reference to an earlier symbol: the index is in the flags' upper 24 bits, or in the
    /// next int when those are 0.
    fn reference(&mut self, at: usize, flags: u32) -> Result<RValue, RDataError> {
        let index = match (flags >> 8) as usize {
            0 => usize::try_from(self.int()?).unwrap_or(0),
            i => i,
        };
        match index.checked_sub(1).and_then(|i| self.symbols.get(i)) {
            Some(name) => Ok(RValue::Symbol(name.clone())),
            None => Err(RDataError::BadReference { offset: at, index, known: self.symbols.len() }),
        }
    }

    /// An integer or logical vector body, each element mapped by `f`.
    fn ints<T>(&mut self, f: impl Fn(i32) -> T) -> Result<Vec<T>, RDataError> {
        let len_at = self.pos;
        let n = self.length()?;
        self.check_count(len_at, n, 4)?;
        let bytes = self.take(n * 4)?;
        Ok(bytes.chunks_exact(4).map(|c| f(i32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect())
    }

    /// A pairlist, whose first cell's flags are `flags`: cells are read in a loop (not by
    /// recursion on the tail), so a long pairlist is not a deep one.
    fn pairlist(&mut self, mut flags: u32, depth: usize) -> Result<RObject, RDataError> {
        let mut cells = Vec::new();
        let mut attributes = Vec::new();
        loop {
            if flags & HAS_ATTR != 0 {
                let attrs = self.attributes(depth + 1)?;
                if cells.is_empty() {
                    attributes = attrs;
                }
            }
            let tag = if flags & HAS_TAG != 0 { Some(self.tag(depth + 1)?) } else { None };
            cells.push((tag, self.item(depth + 1)?));
            let at = self.pos;
            let next = self.int()? as u32;
            match next & 0xff {
                NILVALUE_SXP => break,
                LISTSXP => flags = next,
                other => {
                    return Err(unsupported(at, &format!("a pairlist ending in type {other} ({})", type_name(other))))
                }
            }
        }
        Ok(RObject { value: RValue::Pairlist(cells), attributes })
    }

    /// A tag: a symbol or a reference to one.
    fn tag(&mut self, depth: usize) -> Result<String, RDataError> {
        let at = self.pos;
        match self.item(depth)?.value {
            RValue::Symbol(name) => Ok(name),
            _ => Err(unsupported(at, "a pairlist tag that is not a symbol")),
        }
    }

    /// Attributes: a pairlist whose every cell is tagged.
    fn attributes(&mut self, depth: usize) -> Result<Vec<(String, RObject)>, RDataError> {
        let at = self.pos;
        let RValue::Pairlist(cells) = self.item(depth)?.value else {
            return Err(unsupported(at, "attributes that are not a pairlist"));
        };
        cells
            .into_iter()
            .map(|(tag, value)| tag.map(|t| (t, value)).ok_or_else(|| unsupported(at, "an attribute without a name")))
            .collect()
    }

    /// A CHARSXP (an element of a character vector or a symbol's name), decoded from its
    /// declared encoding; `None` is `NA`.
    fn charsxp(&mut self) -> Result<Option<String>, RDataError> {
        let at = self.pos;
        let flags = self.int()? as u32;
        if flags & 0xff != CHARSXP {
            let ty = flags & 0xff;
            return Err(unsupported(at, &format!("a string of type {ty} ({}), expected CHARSXP", type_name(ty))));
        }
        let len_at = self.pos;
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n)
            .map_err(|_| RDataError::BadLength { offset: len_at, what: format!("string length {n}") })?;
        let start = self.pos;
        let bytes = self.take(n)?;
        let levels = flags >> 12;
        let bad = |encoding| RDataError::BadString { offset: start, encoding };
        if levels & BYTES_MASK != 0 {
            return Err(unsupported(at, "a string of raw bytes (no encoding)"));
        }
        let latin1 = levels & LATIN1_MASK != 0 || (levels & (UTF8_MASK | ASCII_MASK) == 0 && self.native_latin1);
        if latin1 {
            return Ok(Some(bytes.iter().map(|&b| b as char).collect()));
        }
        if levels & ASCII_MASK != 0 && !bytes.is_ascii() {
            return Err(bad("ASCII"));
        }
        std::str::from_utf8(bytes).map(|s| Some(s.to_string())).map_err(|_| bad("UTF-8"))
    }
}

fn unsupported(offset: usize, what: &str) -> RDataError {
    RDataError::Unsupported { offset, what: what.to_string() }
}

/// R's name of a SEXP type, for messages.
fn type_name(ty: u32) -> &'static str {
    match ty {
        0 => "NILSXP",
        1 => "SYMSXP",
        2 => "LISTSXP",
        3 => "CLOSXP, a function",
        4 => "ENVSXP, an environment",
        5 => "PROMSXP",
        6 => "LANGSXP, a call",
        7 | 8 => "a builtin function",
        9 => "CHARSXP",
        10 => "LGLSXP",
        13 => "INTSXP",
        14 => "REALSXP",
        15 => "CPLXSXP, complex numbers",
        16 => "STRSXP",
        19 => "VECSXP",
        20 => "EXPRSXP",
        21 => "BCODESXP, bytecode",
        22 => "EXTPTRSXP",
        23 => "WEAKREFSXP",
        24 => "RAWSXP",
        25 => "S4SXP",
        238 => "ALTREP_SXP, a compact vector",
        239 | 240 => "an old-style attributed pairlist",
        241 | 242 | 253 => "a built-in environment",
        247 => "PERSISTSXP, an item of another database",
        248..=250 => "a package or namespace",
        251 | 252 => "a missing argument or unbound value",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i32) -> [u8; 4] {
        v.to_be_bytes()
    }

    /// `X\n`, version 3, native encoding UTF-8, then `body`.
    fn v3(body: &[u8]) -> Vec<u8> {
        let mut out = b"X\n".to_vec();
        for v in [3, 0x040201, 0x030500, 5] {
            out.extend(int(v));
        }
        out.extend(b"UTF-8");
        out.extend(body);
        out
    }

    fn charsxp(levels: u32, s: &[u8]) -> Vec<u8> {
        let mut out = int((CHARSXP | levels << 12) as i32).to_vec();
        out.extend(int(s.len() as i32));
        out.extend(s);
        out
    }

    #[test]
    fn strings_in_each_encoding_and_na() {
        let mut body = int(STRSXP as i32).to_vec();
        body.extend(int(4));
        body.extend(charsxp(ASCII_MASK, b"plain"));
        body.extend(charsxp(UTF8_MASK, "£20,000".as_bytes()));
        body.extend(charsxp(LATIN1_MASK, b"caf\xe9"));
        body.extend(int(CHARSXP as i32));
        body.extend(int(-1));
        let got = parse(&v3(&body), &Limits::default()).unwrap();
        assert_eq!(got.strings().unwrap(), &[Some("plain".into()), Some("£20,000".into()), Some("café".into()), None]);
    }

    #[test]
    fn a_string_flagged_ascii_must_be_ascii() {
        let mut body = int(STRSXP as i32).to_vec();
        body.extend(int(1));
        body.extend(charsxp(ASCII_MASK, b"caf\xe9"));
        let e = parse(&v3(&body), &Limits::default()).unwrap_err();
        assert!(matches!(e, RDataError::BadString { encoding: "ASCII", .. }), "{e}");
    }
}
