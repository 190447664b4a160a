//! The numeric codes GGUF uses for metadata value types and ggml tensor types, and the caps graft
//! applies while reading, in one place so the reader, the writer and the docs agree.

use candle_core::quantized::GgmlDType;

/// Most tensors a file may declare (llama-class models have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata key/value pairs a file may declare.
pub const MAX_KV: u64 = 1 << 20;
/// Most elements in one metadata array (the largest vocabularies hold ~256k tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Most array elements across all metadata: caps memory, as each parsed value takes 32 bytes
/// however small it is on disk.
pub const MAX_TOTAL_ARRAY_ELEMENTS: u64 = 1 << 25;
/// Longest string (key or value), in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Deepest nesting of arrays of arrays (a plain array has depth 1).
pub const MAX_ARRAY_DEPTH: usize = 4;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name llama.cpp accepts (`GGML_MAX_NAME` - 1); enforced by the writer.
pub const MAX_TENSOR_NAME: usize = 63;

/// Metadata value type codes (the GGUF spec's `gguf_metadata_value_type`).
pub mod value_type {
    /// `uint8`
    pub const U8: u32 = 0;
    /// `int8`
    pub const I8: u32 = 1;
    /// `uint16`
    pub const U16: u32 = 2;
    /// `int16`
    pub const I16: u32 = 3;
    /// `uint32`
    pub const U32: u32 = 4;
    /// `int32`
    pub const I32: u32 = 5;
    /// `float32`
    pub const F32: u32 = 6;
    /// `bool` (one byte, 0 or 1)
    pub const BOOL: u32 = 7;
    /// length-prefixed UTF-8 string
    pub const STRING: u32 = 8;
    /// element type, length, elements
    pub const ARRAY: u32 = 9;
    /// `uint64`
    pub const U64: u32 = 10;
    /// `int64`
    pub const I64: u32 = 11;
    /// `float64`
    pub const F64: u32 = 12;
}

/// Bytes one value of type `code` takes on disk at least (0 for an unknown code). Used to reject
/// counts that cannot fit in what is left of the file before anything is allocated.
pub fn min_value_size(code: u32) -> u64 {
    use value_type::*;
    match code {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 => 8,
        STRING => 8,
        ARRAY => 12,
        _ => 0,
    }
}

/// What a ggml tensor type code means to graft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeCode {
    /// A type candle can load.
    Loadable(GgmlDType),
    /// A valid ggml type (named) that candle cannot load.
    Unsupported(&'static str),
    /// Not a ggml type (or one ggml has removed).
    Unknown,
}

/// Classifies a ggml type code read from a tensor info, without indexing any table.
pub fn dtype_from_code(code: u32) -> DTypeCode {
    use DTypeCode::{Loadable, Unsupported};
    match code {
        0 => Loadable(GgmlDType::F32),
        1 => Loadable(GgmlDType::F16),
        2 => Loadable(GgmlDType::Q4_0),
        3 => Loadable(GgmlDType::Q4_1),
        6 => Loadable(GgmlDType::Q5_0),
        7 => Loadable(GgmlDType::Q5_1),
        8 => Loadable(GgmlDType::Q8_0),
        9 => Unsupported("Q8_1"),
        10 => Loadable(GgmlDType::Q2K),
        11 => Loadable(GgmlDType::Q3K),
        12 => Loadable(GgmlDType::Q4K),
        13 => Loadable(GgmlDType::Q5K),
        14 => Loadable(GgmlDType::Q6K),
        15 => Unsupported("Q8_K"),
        16 => Unsupported("IQ2_XXS"),
        17 => Unsupported("IQ2_XS"),
        18 => Unsupported("IQ3_XXS"),
        19 => Unsupported("IQ1_S"),
        20 => Unsupported("IQ4_NL"),
        21 => Unsupported("IQ3_S"),
        22 => Unsupported("IQ2_S"),
        23 => Unsupported("IQ4_XS"),
        24 => Unsupported("I8"),
        25 => Unsupported("I16"),
        26 => Unsupported("I32"),
        27 => Unsupported("I64"),
        28 => Unsupported("F64"),
        29 => Unsupported("IQ1_M"),
        30 => Loadable(GgmlDType::BF16),
        34 => Unsupported("TQ1_0"),
        35 => Unsupported("TQ2_0"),
        39 => Unsupported("MXFP4"),
        _ => DTypeCode::Unknown,
    }
}

/// The code a ggml type is written with.
pub fn dtype_code(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

/// Whether tensors of `dtype` can be stored in a GGUF file and read back by candle (`Q8_1` and
/// `Q8_K` are ggml's internal dot-product formats, which candle's loader refuses).
pub fn dtype_is_storable(dtype: GgmlDType) -> bool {
    matches!(dtype_from_code(dtype_code(dtype)), DTypeCode::Loadable(_))
}

/// Bytes taken by `elems` elements of `dtype`, or `None` when `elems` is not a whole number of
/// blocks or the size overflows.
pub fn tensor_bytes(dtype: GgmlDType, elems: u64) -> Option<u64> {
    let block = dtype.block_size() as u64;
    if block == 0 || !elems.is_multiple_of(block) {
        return None;
    }
    (elems / block).checked_mul(dtype.type_size() as u64)
}
