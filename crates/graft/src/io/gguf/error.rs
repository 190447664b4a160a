//! Why a GGUF file could not be read or written: each error names the file and the byte offset
//! or field at fault, so a user can tell a truncated download from a corrupt or hostile file.

use std::path::PathBuf;

/// Why a GGUF file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The GGUF file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{path}: not a GGUF file: the first 4 bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// The format version is not 2 or 3 (or the file is big-endian).
    #[error("{path}: GGUF version {version} is not supported (graft reads little-endian versions 2 and 3)")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version field as read (little-endian).
        version: u32,
    },
    /// The file ends before a field it declares: truncated download or corrupt length.
    #[error("{path}: unexpected end of file at byte {offset}: {what} needs {needed} bytes, only {available} left (is the file truncated?)")]
    UnexpectedEof {
        /// The file.
        path: PathBuf,
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file at `offset`.
        available: u64,
        /// The field being read.
        what: String,
    },
    /// A string length exceeds what is left of the file (or the string cap).
    #[error("{path}: {what} at byte {offset} declares a string of {len} bytes, but only {remaining} bytes are left")]
    StringTooLong {
        /// The file.
        path: PathBuf,
        /// Where the length prefix starts.
        offset: u64,
        /// Declared length.
        len: u64,
        /// Bytes left after the length prefix.
        remaining: u64,
        /// The field being read.
        what: String,
    },
    /// `tensor_count`, `metadata_kv_count` or the total of array elements is beyond its cap or
    /// cannot fit in the file.
    #[error("{path}: {field} = {count} at byte {offset} is impossible: the cap is {cap} and the {remaining} bytes left hold at most {fits}")]
    CountTooLarge {
        /// The file.
        path: PathBuf,
        /// Which count.
        field: &'static str,
        /// Where the count field starts.
        offset: u64,
        /// The declared count.
        count: u64,
        /// graft's cap for this count.
        cap: u64,
        /// Bytes left in the file.
        remaining: u64,
        /// How many entries of minimal size the remaining bytes could hold.
        fits: u64,
    },
    /// A metadata array declares more elements than the per-array cap.
    #[error("{path}: {what} at byte {offset} declares an array of {len} elements (cap {cap})")]
    ArrayTooLong {
        /// The file.
        path: PathBuf,
        /// Where the array header starts.
        offset: u64,
        /// Declared length.
        len: u64,
        /// The cap.
        cap: u64,
        /// The metadata key.
        what: String,
    },
    /// Arrays of arrays nested deeper than the cap.
    #[error("{path}: {what} at byte {offset} nests arrays deeper than {max} levels")]
    NestingTooDeep {
        /// The file.
        path: PathBuf,
        /// Where the too-deep array starts.
        offset: u64,
        /// The cap.
        max: usize,
        /// The metadata key.
        what: String,
    },
    /// A metadata value type code is not one of GGUF's 13 types.
    #[error("{path}: {what} at byte {offset} has unknown value type {value_type} (valid: 0..=12)")]
    UnknownValueType {
        /// The file.
        path: PathBuf,
        /// Where the type code starts.
        offset: u64,
        /// The code found.
        value_type: u32,
        /// The metadata key.
        what: String,
    },
    /// A metadata value is malformed (a bool that is neither 0 nor 1).
    #[error("{path}: {what} at byte {offset}: {reason}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// Where the value starts.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// The metadata key.
        what: String,
    },
    /// A string is not valid UTF-8.
    #[error("{path}: {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the first invalid byte is.
        offset: u64,
        /// The field being read.
        what: String,
    },
    /// The same metadata key appears twice.
    #[error("{path}: metadata key `{key}` at byte {offset} appears twice")]
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// Where the second occurrence starts.
        offset: u64,
        /// The key.
        key: String,
    },
    /// The same tensor name appears twice.
    #[error("{path}: tensor `{name}` at byte {offset} appears twice in the tensor table")]
    DuplicateTensor {
        /// The file.
        path: PathBuf,
        /// Where the second occurrence starts.
        offset: u64,
        /// The tensor name.
        name: String,
    },
    /// A tensor has 0 or more than 4 dimensions, or a dimension of 0 or above `i64::MAX`.
    #[error("{path}: tensor `{name}` at byte {offset}: {reason}")]
    InvalidDims {
        /// The file.
        path: PathBuf,
        /// Where the offending field starts.
        offset: u64,
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The element count or byte size of a tensor overflows 64 bits.
    #[error("{path}: tensor `{name}`: shape {dims:?} (innermost first) overflows 64 bits")]
    ShapeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Its dimensions as stored (innermost first).
        dims: Vec<u64>,
    },
    /// The innermost dimension is not a whole number of quantization blocks.
    #[error(
        "{path}: tensor `{name}`: innermost dimension {ne0} is not a multiple of the {dtype} block size {block_size}"
    )]
    BlockMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The innermost dimension.
        ne0: u64,
        /// The type's block size.
        block_size: u64,
        /// The type's name.
        dtype: String,
    },
    /// A tensor type code that is not a ggml type.
    #[error("{path}: tensor `{name}` at byte {offset} has unknown ggml type {code}")]
    UnknownDType {
        /// The file.
        path: PathBuf,
        /// Where the type code starts.
        offset: u64,
        /// The tensor name.
        name: String,
        /// The code found.
        code: u32,
    },
    /// A valid ggml type that graft (candle) cannot load.
    #[error("{path}: tensor `{name}` has ggml type {dtype}, which graft cannot load (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); re-quantize the model with llama.cpp")]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The type's name.
        dtype: String,
    },
    /// A tensor's data extends past the end of the file.
    #[error("{path}: tensor `{name}` ends at byte {end}, past the end of the file ({file_len} bytes; is the file truncated?)")]
    TensorOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Absolute end of its data (saturated at `u64::MAX`).
        end: u64,
        /// The file length.
        file_len: u64,
    },
    /// Two tensors share bytes.
    #[error("{path}: tensors `{first}` and `{second}` overlap (`{second}` starts at byte {offset}, before `{first}` ends at byte {first_end})")]
    Overlap {
        /// The file.
        path: PathBuf,
        /// The tensor that starts first.
        first: String,
        /// Where it ends.
        first_end: u64,
        /// The tensor starting inside it.
        second: String,
        /// Where that one starts.
        offset: u64,
    },
    /// A tensor's offset is not a multiple of the file's alignment.
    #[error("{path}: tensor `{name}` has data offset {offset}, not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The alignment in force.
        alignment: u64,
    },
    /// `general.alignment` is not a `u32` power of two ≤ 1 MiB.
    #[error("{path}: general.alignment must be a uint32 power of two <= 1048576, found {found}")]
    BadAlignment {
        /// The file.
        path: PathBuf,
        /// The value (and type) found.
        found: String,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("{path}: metadata `{key}`: {reason}")]
    Metadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is missing from the file.
    #[error("{path}: no tensor named `{name}`")]
    MissingTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A validated tensor could not be turned into a candle tensor (device error, ...).
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// [`super::GgufWriter`] was given something it cannot write.
    #[error("GGUF writer: {item}: {reason}")]
    Build {
        /// The metadata key or tensor name.
        item: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
