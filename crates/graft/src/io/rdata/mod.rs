//! A bounded reader for the R data files that R packages ship: R's serialization format (XDR,
//! versions 2 and 3) and the lazy-load database of a package's `data/` folder
//! (`Rdata.rdx` + `Rdata.rdb`). Only the subset that datasets of text need is read — character,
//! integer, logical and double vectors, lists, pairlists (attributes, names), symbols and
//! references to them; anything else (closures, environments, ALTREP compact sequences,
//! bytecode, other compressors) is a clear [`RDataError`], never a panic.
//!
//! Every length is checked against the bytes that are left before anything is allocated, the
//! nesting depth is capped, and decompression stops at [`Limits::max_bytes`], so a hostile or
//! truncated file costs at most a small multiple of its size.

mod lazyload;
mod serial;

pub use lazyload::{decode_blob, Compression, LazyLoadDb};
pub use serial::{parse, RObject, RValue};

/// Caps on what the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed serialization, in bytes (the default, 256 MiB, is 250 times the
    /// largest novel of janeaustenr).
    pub max_bytes: usize,
    /// Deepest nesting of lists, pairlists and attributes.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 256 MiB and 64 levels.
    fn default() -> Self {
        Self { max_bytes: 256 << 20, max_depth: 64 }
    }
}

/// Why R data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RDataError {
    /// The input ended inside an item.
    #[error("truncated R serialization: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// How many bytes it needed beyond the end.
        needed: usize,
    },
    /// The stream does not start like an XDR R serialization.
    #[error("not an XDR R serialization: {0}")]
    BadHeader(String),
    /// An item that this reader does not implement.
    #[error("unsupported R item at offset {offset}: {what}")]
    Unsupported {
        /// Offset of the item's flags.
        offset: usize,
        /// What it is.
        what: String,
    },
    /// A length or a count that cannot be right (negative, larger than the input, over a limit).
    #[error("bad length at offset {offset}: {what}")]
    BadLength {
        /// Where the length was read.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// Lists nested deeper than [`Limits::max_depth`].
    #[error("R items nested deeper than {0} levels")]
    TooDeep(usize),
    /// A string's bytes are not valid in its declared encoding.
    #[error("string at offset {offset} is not valid {encoding}")]
    BadString {
        /// Offset of the string's bytes.
        offset: usize,
        /// The encoding it was declared (or assumed) to be in.
        encoding: &'static str,
    },
    /// A reference to an item that was never read.
    #[error("reference #{index} at offset {offset} names no earlier item ({known} known)")]
    BadReference {
        /// Offset of the reference.
        offset: usize,
        /// The 1-based index it gives.
        index: usize,
        /// How many items can be referenced.
        known: usize,
    },
    /// Bytes after the one item a serialization holds.
    #[error("{0} bytes after the end of the R serialization")]
    TrailingBytes(usize),
    /// A compressed stream is damaged, or inflates to another size than declared.
    #[error("compressed R data: {0}")]
    Compression(String),
    /// The lazy-load index or a blob it points to does not have the expected shape.
    #[error("lazy-load database: {0}")]
    Database(String),
}
