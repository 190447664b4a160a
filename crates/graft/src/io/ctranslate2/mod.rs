//! CTranslate2 models: the `model.bin` weights file and, for Whisper, the folder around it.
//!
//! A `model.bin` is little-endian: the format version (`u32`, 1 to 6), then from version 2 the
//! spec name (a string) and its revision (`u32`), the variable count (`u32`) and per variable its
//! name, rank (`u8`), dimensions (`u32` each), dtype code (`u8`, from version 4; before that the
//! item size) and byte count (`u32`) followed by the raw bytes; from version 3 the alias count and
//! `(alias, variable)` name pairs close the file. Strings are a `u16` length that counts a
//! trailing NUL byte, then the bytes.
//!
//! [`Ct2Model::open`] reads the file with every length and count checked against the bytes left
//! before anything is allocated; a malformed file is a [`Ct2Error`] naming the file and what is
//! wrong, never a panic. [`whisper`] reads a CTranslate2 Whisper folder (`model.bin`,
//! `config.json`, `tokenizer.json`, `vocabulary.txt`).

mod model;
mod reader;
pub mod whisper;

use std::path::PathBuf;

pub use model::{Ct2Model, Ct2Spec, Variable};

/// The newest format version this reader knows (CTranslate2's `CURRENT_BINARY_VERSION`).
pub const MAX_VERSION: u32 = 6;

/// The element type of a CTranslate2 variable, numbered as CTranslate2's `DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    /// 32-bit float (code 0).
    F32,
    /// 8-bit signed integer (code 1): quantized weights (with a `_scale`) and flags.
    I8,
    /// 16-bit signed integer (code 2): quantized weights (with a `_scale`) and small settings.
    I16,
    /// 32-bit signed integer (code 3).
    I32,
    /// 16-bit float (code 4).
    F16,
    /// bfloat16 (code 5).
    BF16,
}

impl Ct2DType {
    /// The dtype of code `code`, if it is one CTranslate2 defines.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Ct2DType::F32,
            1 => Ct2DType::I8,
            2 => Ct2DType::I16,
            3 => Ct2DType::I32,
            4 => Ct2DType::F16,
            5 => Ct2DType::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Ct2DType::I8 => 1,
            Ct2DType::I16 | Ct2DType::F16 | Ct2DType::BF16 => 2,
            Ct2DType::F32 | Ct2DType::I32 => 4,
        }
    }

    /// True for the float types.
    pub fn is_float(self) -> bool {
        matches!(self, Ct2DType::F32 | Ct2DType::F16 | Ct2DType::BF16)
    }

    /// CTranslate2's name of the type (`float16`, `int8`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Ct2DType::F32 => "float32",
            Ct2DType::I8 => "int8",
            Ct2DType::I16 => "int16",
            Ct2DType::I32 => "int32",
            Ct2DType::F16 => "float16",
            Ct2DType::BF16 => "bfloat16",
        }
    }
}

/// A CTranslate2 file or folder that could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Ct2Error {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: Ct2ErrorKind,
}

/// What is wrong with a CTranslate2 file or folder.
#[derive(Debug, thiserror::Error)]
pub enum Ct2ErrorKind {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The file ends before a field it announces.
    #[error(
        "truncated: {what} needs {needed} bytes at offset {offset} but only {left} are left (is the file complete?)"
    )]
    Truncated {
        /// The field being read (`variable #3 shape`).
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs (at least).
        needed: u64,
        /// How many bytes the file has from there.
        left: u64,
    },
    /// A format version this reader does not know.
    #[error("format version {found} is not supported (known: 1 to {MAX_VERSION}); not a CTranslate2 model.bin, or one written by a newer CTranslate2")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A string is malformed (zero length, no closing NUL, not UTF-8).
    #[error("{what} at offset {offset}: {reason}")]
    BadString {
        /// Which string (`variable #3 name`).
        what: String,
        /// Where its length field starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A dtype code CTranslate2 does not define.
    #[error("variable `{name}` has dtype code {code}, which is not a CTranslate2 type (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)")]
    UnknownDType {
        /// The variable.
        name: String,
        /// The code in the file.
        code: u8,
    },
    /// The byte count does not match the shape and dtype.
    #[error("variable `{name}` has shape {shape:?} of {} ({expected} bytes) but {found} bytes are stored", dtype.as_str())]
    SizeMismatch {
        /// The variable.
        name: String,
        /// Its shape.
        shape: Box<[u64]>,
        /// Its dtype.
        dtype: Ct2DType,
        /// Bytes the shape and dtype need (`None` when the count overflows).
        expected: ExpectedBytes,
        /// Bytes stored.
        found: u64,
    },
    /// A variable or alias name is used twice.
    #[error("the name `{name}` is used twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// An alias names a variable the file does not have.
    #[error("alias `{alias}` refers to `{target}`, which is not a variable of the file")]
    BadAlias {
        /// The alias.
        alias: String,
        /// The missing variable it names.
        target: String,
    },
    /// Bytes follow the last field.
    #[error("{count} bytes follow the aliases at offset {offset}; a model.bin ends there (two files joined?)")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: u64,
        /// How many there are.
        count: u64,
    },
    /// A variable asked for is not in the file.
    #[error("no variable named `{name}`")]
    Missing {
        /// The name asked for.
        name: String,
    },
    /// A variable does not hold what its use needs (a scalar, a fused block of rows, a scale).
    #[error("variable `{name}`: {reason}")]
    Variable {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A companion file (`config.json`) is malformed, or the folder lacks one.
    #[error("{0}")]
    Folder(String),
}

/// The byte count a shape and dtype need, or that it overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedBytes {
    /// The count fits in 64 bits.
    Bytes(u64),
    /// The element count times the item size does not fit in 64 bits.
    Overflow,
}

impl std::fmt::Display for ExpectedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedBytes::Bytes(n) => write!(f, "{n}"),
            ExpectedBytes::Overflow => write!(f, "more than 2^64"),
        }
    }
}
