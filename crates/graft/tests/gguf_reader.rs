//! The GGUF reader against bad input (RELIABILITY.md rows G1–G9, and a time-boxed mutation loop
//! standing in for G10) and against the real default model. Every bad file is built here at test
//! time, by hand or with `GgufWriter`; no binary fixtures are committed.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use graft::io::gguf::types::{MAX_ARRAY_LEN, MAX_TENSORS};
use graft::io::gguf::{parse_header, GgufError, GgufFile, GgufHeader, GgufWriter};
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Allocation accounting: counts bytes allocated by the current thread while enabled, so a test
// can assert that parsing a hostile header allocates (almost) nothing.

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let cur = CURRENT.with(|c| {
                c.set(c.get() + delta);
                c.get()
            });
            PEAK.with(|p| p.set(p.get().max(cur)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak number of bytes it had allocated at once.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, isize) {
    CURRENT.with(|c| c.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (r, PEAK.with(|p| p.get()))
}

// ---------------------------------------------------------------------------------------------
// Hand-crafted GGUF bytes.

#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(self, v: u8) -> Self {
        self.raw(&[v])
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A metadata entry of type u32.
    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info entry.
    fn info(self, name: &str, dims: &[u64], dtype: u32, offset: u64) -> Self {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(dtype).u64(offset)
    }
    /// Zero bytes up to the next multiple of `align`.
    fn pad(self, align: usize) -> Self {
        let n = self.0.len().next_multiple_of(align) - self.0.len();
        self.raw(&vec![0; n])
    }
    fn zeros(self, n: usize) -> Self {
        self.raw(&vec![0; n])
    }
}

fn header(version: u32, tensors: u64, kvs: u64) -> B {
    B::default().raw(b"GGUF").u32(version).u64(tensors).u64(kvs)
}

/// A v3 file with one tensor info and `data` zero bytes of tensor data after the aligned header.
fn one_tensor(dims: &[u64], dtype: u32, offset: u64, data: usize) -> Vec<u8> {
    header(3, 1, 0).info("t", dims, dtype, offset).pad(32).zeros(data).0
}

fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    parse_header(bytes, Path::new("crafted.gguf"))
}

/// Asserts `bytes` is rejected with an error matching `pat`, and that the message names the file.
macro_rules! rejects {
    ($bytes:expr, $pat:pat) => {{
        match parse(&$bytes) {
            Err(e @ $pat) => {
                assert!(e.to_string().starts_with("crafted.gguf: "), "message does not name the file: {e}");
                e
            }
            Err(e) => panic!("expected {}, got {e:?}", stringify!($pat)),
            Ok(_) => panic!("expected {}, but the file was accepted", stringify!($pat)),
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// G1: magic and version.

#[test]
fn g1_bad_magic_is_rejected() {
    for magic in [b"GGUG", b"gguf", b"\0\0\0\0", b"GGML", b"FUGG", b"GGJT"] {
        let bytes = B::default().raw(magic).u32(3).u64(0).u64(0).0;
        let e = rejects!(bytes, GgufError::BadMagic { .. });
        let GgufError::BadMagic { found, .. } = e else { unreachable!() };
        assert_eq!(&found, magic);
    }
    rejects!(b"GGU".as_slice(), GgufError::UnexpectedEof { offset: 0, needed: 4, .. });
}

#[test]
fn g1_only_versions_2_and_3_are_accepted() {
    for v in [0u32, 1, 4, 5, u32::MAX, 0x0300_0000, u32::from_le_bytes(*b"GGUF")] {
        let e = rejects!(header(v, 0, 0).0, GgufError::UnsupportedVersion { .. });
        assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v));
    }
    // llama.cpp#19003: "GGUF" repeated.
    rejects!(b"GGUFGGUFGGUFGGUFGGUFGGUF".as_slice(), GgufError::UnsupportedVersion { .. });
    for v in [2, 3] {
        let h = parse(&header(v, 0, 0).0).unwrap();
        assert_eq!(h.version, v);
        assert!(h.tensors.is_empty() && h.content.metadata.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// G2: absurd counts.

const ABSURD: [(u64, u64); 6] =
    [(1 << 63, 0), (0, 1 << 63), (500_000_000, 500_000_000), (u64::MAX, u64::MAX), (1, 0), (0, 1)];

#[test]
fn g2_absurd_counts_are_rejected_without_allocating() {
    // The accounting sees allocations (else the bounds below would prove nothing).
    let (v, peak) = peak_alloc(|| vec![1u8; 10_000]);
    assert!(peak >= 10_000 && v.len() == 10_000, "allocation tracking is broken: {peak}");
    for (t, k) in ABSURD {
        let bytes = header(3, t, k).0;
        assert_eq!(bytes.len(), 24);
        let (r, peak) = peak_alloc(|| parse(&bytes).map(|_| ()));
        let e = r.expect_err("a 24-byte file cannot hold any entry");
        assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e:?}");
        assert!(peak < 4096, "parsing a 24-byte header allocated {peak} bytes");
    }
    // Over the cap even when the file is long enough for the minimal entries.
    let e = rejects!(
        header(3, MAX_TENSORS + 1, 0).zeros(40 * (MAX_TENSORS as usize + 1)).0,
        GgufError::CountTooLarge { .. }
    );
    assert!(matches!(e, GgufError::CountTooLarge { field: "tensor_count", .. }));
}

/// Peak RSS of a fresh process that opens header-only files with absurd counts (G2 goal:
/// < 64 MiB). Runs itself as a child so no other test's memory is counted.
#[cfg(target_os = "linux")]
#[test]
fn g2_header_only_files_keep_peak_rss_small() {
    const CHILD: &str = "GRAFT_GGUF_RSS_CHILD";
    if let Ok(dir) = std::env::var(CHILD) {
        for (i, (t, k)) in ABSURD.iter().enumerate() {
            let path = Path::new(&dir).join(format!("absurd{i}.gguf"));
            std::fs::write(&path, header(3, *t, *k).0).unwrap();
            assert!(GgufFile::open(&path).is_err());
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        println!("RSS_PEAK {}", hwm.split_whitespace().nth(1).unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["g2_header_only_files_keep_peak_rss_small", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let kb: u64 = stdout
        .lines()
        .find_map(|l| l.split("RSS_PEAK ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("child printed no RSS: {stdout}"))
        .parse()
        .unwrap();
    assert!(kb < 64 * 1024, "peak RSS {kb} KiB");
}

// ---------------------------------------------------------------------------------------------
// G3: string lengths.

#[test]
fn g3_string_lengths_beyond_the_file_are_rejected() {
    // sd.cpp#1397: key_len = 0xFFFF_FFFF_FFFF.
    let bytes = header(3, 0, 1).u64(0xFFFF_FFFF_FFFF).raw(b"key").u32(4).u32(1).0;
    let (r, peak) = peak_alloc(|| parse(&bytes).map(|_| ()));
    match r {
        Err(GgufError::StringTooLong { len, remaining, offset, .. }) => {
            assert_eq!((len, remaining, offset), (0xFFFF_FFFF_FFFF, 11, 24));
        }
        other => panic!("{other:?}"),
    }
    assert!(peak < 4096, "allocated {peak} bytes");
    // One byte more than what is left.
    let bytes = header(3, 0, 1).u64(12).raw(b"key").u32(4).u32(1).0;
    rejects!(bytes, GgufError::StringTooLong { len: 12, remaining: 11, .. });
    // A string value of length 2^63.
    let bytes = header(3, 0, 1).str("k").u32(8).u64(1 << 63).0;
    rejects!(bytes, GgufError::StringTooLong { .. });
}

#[test]
fn invalid_utf8_duplicates_and_bools_are_rejected() {
    let bytes = header(3, 0, 1).u64(3).raw(b"a\xffb").u32(4).u32(1).0;
    let e = rejects!(bytes, GgufError::InvalidUtf8 { offset: 33, .. });
    assert!(e.to_string().contains("at byte 33"), "{e}");
    rejects!(header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).0, GgufError::DuplicateKey { .. });
    rejects!(header(3, 0, 1).str("b").u32(7).u8(2).0, GgufError::InvalidValue { .. });
    let t = header(3, 2, 0).info("t", &[8], 0, 0).info("t", &[8], 0, 32).pad(32).zeros(64).0;
    rejects!(t, GgufError::DuplicateTensor { .. });
}

// ---------------------------------------------------------------------------------------------
// G4: arrays.

#[test]
fn g4_huge_arrays_are_rejected_without_allocating() {
    let bytes = header(3, 0, 1).str("a").u32(9).u32(0).u64(1 << 62).0;
    let (r, peak) = peak_alloc(|| parse(&bytes).map(|_| ()));
    assert!(matches!(r, Err(GgufError::ArrayTooLong { len, .. }) if len == 1 << 62), "{r:?}");
    assert!(peak < 4096, "allocated {peak} bytes");
    rejects!(header(3, 0, 1).str("a").u32(9).u32(0).u64(MAX_ARRAY_LEN + 1).0, GgufError::ArrayTooLong { .. });
    // Within the cap but longer than the file: 1000 u32 elements in 10 bytes.
    rejects!(
        header(3, 0, 1).str("a").u32(9).u32(4).u64(1000).zeros(10).0,
        GgufError::UnexpectedEof { needed: 4000, .. }
    );
}

/// `depth` arrays nested in each other, each holding one element, the innermost holding a u8.
fn nested(depth: usize) -> Vec<u8> {
    let mut b = header(3, 0, 1).str("n").u32(9);
    for _ in 1..depth {
        b = b.u32(9).u64(1);
    }
    b.u32(0).u64(1).u8(7).0
}

#[test]
fn g4_nesting_is_capped_without_recursion() {
    let h = parse(&nested(4)).unwrap();
    let mut v = &h.content.metadata["n"];
    for _ in 0..4 {
        let Value::Array(items) = v else { panic!("{v:?}") };
        assert_eq!(items.len(), 1);
        v = &items[0];
    }
    assert!(matches!(v, Value::U8(7)));
    for depth in [5, 1000, 1_000_000] {
        rejects!(nested(depth), GgufError::NestingTooDeep { max: 4, .. });
    }
}

#[test]
fn g4_unknown_value_types_are_rejected() {
    rejects!(
        header(3, 0, 1).str("a").u32(9).u32(99).u64(1).0,
        GgufError::UnknownValueType { value_type: 99, offset: 37, .. }
    );
    rejects!(header(3, 0, 1).str("a").u32(13).u32(0).0, GgufError::UnknownValueType { value_type: 13, offset: 33, .. });
    rejects!(header(3, 0, 1).str("a").u32(u32::MAX).0, GgufError::UnknownValueType { .. });
}

// ---------------------------------------------------------------------------------------------
// G5: tensor shapes.

#[test]
fn g5_bad_dimensions_are_rejected() {
    rejects!(one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4), GgufError::InvalidDims { .. });
    // (Zero bytes appended so the file is long enough for one minimal tensor info.)
    rejects!(header(3, 1, 0).str("t").u32(0).u32(0).u64(0).zeros(32).0, GgufError::InvalidDims { .. });
    rejects!(header(3, 1, 0).str("t").u32(u32::MAX).zeros(32).0, GgufError::InvalidDims { .. });
    rejects!(one_tensor(&[4, 0], 0, 0, 16), GgufError::InvalidDims { .. });
    rejects!(one_tensor(&[1 << 63], 0, 0, 16), GgufError::InvalidDims { .. });
    rejects!(one_tensor(&[1 << 32, 1 << 32, 2], 0, 0, 16), GgufError::ShapeOverflow { .. });
    // The element count fits, the byte size does not.
    rejects!(one_tensor(&[1 << 62, 2], 0, 0, 16), GgufError::ShapeOverflow { .. });
    // Q4_1 blocks hold 32 weights.
    rejects!(one_tensor(&[16, 2], 3, 0, 40), GgufError::BlockMismatch { ne0: 16, block_size: 32, .. });
    let h = parse(&one_tensor(&[32, 2], 3, 0, 40)).unwrap();
    assert_eq!(h.tensors[0].dims, vec![2, 32]);
    assert_eq!(h.tensors[0].len, 40);
}

// ---------------------------------------------------------------------------------------------
// G6: placement.

#[test]
fn g6_tensors_past_eof_overlapping_or_misaligned_are_rejected() {
    // 8 f32 = 32 bytes; header (24) + tensor info (33) end at 57, so data starts at 64.
    let ok = one_tensor(&[8], 0, 0, 32);
    assert_eq!(parse(&ok).unwrap().tensors[0].start, 64);
    rejects!(one_tensor(&[8], 0, 0, 31), GgufError::TensorOutOfBounds { end: 96, file_len: 95, .. });
    let e = rejects!(one_tensor(&[8], 0, 128, 32), GgufError::TensorOutOfBounds { end: 224, .. });
    assert!(e.to_string().contains("`t`"), "{e}");
    rejects!(one_tensor(&[8], 0, u64::MAX - 31, 32), GgufError::TensorOutOfBounds { end: u64::MAX, .. });
    rejects!(one_tensor(&[8], 0, 4, 64), GgufError::Misaligned { offset: 4, alignment: 32, .. });
    let two = |off_b: u64| header(3, 2, 0).info("a", &[16], 0, 0).info("b", &[8], 0, off_b).pad(32).zeros(96).0;
    rejects!(two(32), GgufError::Overlap { .. });
    rejects!(two(0), GgufError::Overlap { .. });
    let h = parse(&two(64)).unwrap();
    assert_eq!(h.tensors.iter().map(|t| t.start).collect::<Vec<_>>(), vec![96, 160]);
}

// ---------------------------------------------------------------------------------------------
// G7: tensor types.

#[test]
fn g7_unknown_and_unsupported_dtypes_are_rejected() {
    for code in [200u32, u32::MAX, 4, 5, 31, 40] {
        let e = rejects!(one_tensor(&[256], code, 0, 1024), GgufError::UnknownDType { .. });
        assert!(matches!(e, GgufError::UnknownDType { code: c, .. } if c == code));
    }
    for code in [9u32, 15, 16, 24, 28, 39] {
        rejects!(one_tensor(&[256], code, 0, 1024), GgufError::UnsupportedDType { .. });
    }
}

// ---------------------------------------------------------------------------------------------
// G8: alignment.

#[test]
fn g8_bad_alignments_are_rejected() {
    let with = |kv: B| kv.info("t", &[8], 0, 0).pad(32).zeros(64).0;
    for a in [0u32, 3, 48, 1 << 21, 1 << 31] {
        rejects!(with(header(3, 1, 1).kv_u32("general.alignment", a)), GgufError::BadAlignment { .. });
    }
    // Right value, wrong type (llama.cpp PR #26318): int32, uint64, string.
    rejects!(with(header(3, 1, 1).str("general.alignment").u32(5).u32(32)), GgufError::BadAlignment { .. });
    rejects!(with(header(3, 1, 1).str("general.alignment").u32(10).u64(32)), GgufError::BadAlignment { .. });
    rejects!(with(header(3, 1, 1).str("general.alignment").u32(8).str("32")), GgufError::BadAlignment { .. });
    let bytes = header(3, 1, 1).kv_u32("general.alignment", 256).info("t", &[8], 0, 0).pad(256).zeros(32).0;
    let h = parse(&bytes).unwrap();
    assert_eq!((h.alignment, h.content.tensor_data_offset), (256, 256));
    // Offsets must follow the file's alignment, not the default.
    let bytes = header(3, 1, 1).kv_u32("general.alignment", 256).info("t", &[8], 0, 32).pad(256).zeros(64).0;
    rejects!(bytes, GgufError::Misaligned { alignment: 256, .. });
}

// ---------------------------------------------------------------------------------------------
// G9 and the mutation loop, on a tiny model built by the writer.

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| scale * ((i as f32) * 0.37).sin()).collect()
}

/// A tiny llama-like GGUF (~2 KB): a vocabulary, config keys and four tensors of three types.
fn tiny_model() -> Vec<u8> {
    let dev = Device::Cpu;
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
    w.add_metadata("llama.block_count", Value::U32(1)).unwrap();
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0)).unwrap();
    w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(false)).unwrap();
    let tokens = (0..16).map(|i| Value::String(format!("tok{i}"))).collect();
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(tokens)).unwrap();
    w.add_metadata("tokenizer.ggml.token_type", Value::Array((0..16).map(Value::I32).collect())).unwrap();
    let t = |n: usize, dims: &[usize], s: f32| Tensor::from_vec(ramp(n, s), dims, &dev).unwrap();
    w.add_tensor("token_embd.weight", &t(512, &[16, 32], 0.5), GgmlDType::Q8_0).unwrap();
    w.add_tensor("blk.0.attn_q.weight", &t(1024, &[32, 32], 0.1), GgmlDType::Q4_1).unwrap();
    w.add_tensor("blk.0.attn_norm.weight", &t(32, &[32], 1.0), GgmlDType::F32).unwrap();
    w.add_tensor("output_norm.weight", &t(32, &[32], 2.0), GgmlDType::F32).unwrap();
    w.to_bytes().unwrap()
}

/// Opens `bytes` and reads and dequantizes every tensor: the whole path a model load takes.
fn load_everything(bytes: &[u8]) -> Result<usize, GgufError> {
    let f = GgufFile::from_bytes(bytes.to_vec(), "mutant.gguf")?;
    let names: Vec<String> = f.tensor_names().map(String::from).collect();
    for name in &names {
        f.dequantize(name, DType::F32, &Device::Cpu)?;
    }
    Ok(names.len())
}

#[test]
fn g9_every_truncation_is_an_error_and_only_the_full_file_loads() {
    let bytes = tiny_model();
    let h = parse(&bytes).unwrap();
    let last_end = h.tensors.iter().map(|t| t.start + t.len).max().unwrap();
    // The last tensor fills the file exactly, so no prefix can be a complete file.
    assert_eq!(last_end, bytes.len() as u64);
    assert_eq!(load_everything(&bytes).unwrap(), 4);
    for n in 0..bytes.len() {
        match load_everything(&bytes[..n]) {
            Err(e) => assert!(e.is_truncation(), "prefix {n}: not reported as a truncation: {e}"),
            Ok(_) => panic!("prefix of {n} of {} bytes was accepted", bytes.len()),
        }
    }
}

#[test]
fn mutated_files_never_panic() {
    let seed = tiny_model();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6767_7566);
    let interesting: [u64; 8] = [0, 1, 0x7F, 0xFF, 1 << 31, 1 << 63, u64::MAX, seed.len() as u64];
    let start = std::time::Instant::now();
    let (mut runs, mut accepted, mut panics) = (0u32, 0u32, Vec::new());
    while runs < 10_000 && start.elapsed().as_secs() < 30 {
        let mut b = seed.clone();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..b.len());
            match rng.random_range(0..4) {
                0 => b[at] ^= 1 << rng.random_range(0..8),
                1 => b[at] = rng.random(),
                2 => {
                    let v = interesting[rng.random_range(0..interesting.len())].to_le_bytes();
                    let end = (at + 8).min(b.len());
                    b[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        let outcome = std::panic::catch_unwind(|| load_everything(&b).is_ok());
        match outcome {
            Ok(ok) => accepted += u32::from(ok),
            Err(_) => panics.push(b),
        }
        runs += 1;
    }
    assert!(runs >= 1000, "only {runs} mutants in the time box");
    assert!(panics.is_empty(), "{} of {runs} mutants panicked; first: {:?}", panics.len(), panics[0]);
    // Sanity: the loop exercises both outcomes (flips inside tensor data keep the file valid).
    assert!(accepted > 0 && accepted < runs, "accepted {accepted} of {runs}");
}

// ---------------------------------------------------------------------------------------------
// The real default model.

#[test]
fn real_model_tensor_table_matches_the_golden_facts() {
    let facts = common::golden_json("model_facts.json");
    let path = common::default_gguf();
    let f = GgufFile::open(&path).unwrap();
    let h = f.header();
    assert_eq!(h.version, 3);
    assert_eq!(h.tensors.len() as u64, facts["gguf_n_tensors"].as_u64().unwrap());
    let mut counts = std::collections::BTreeMap::new();
    for t in &h.tensors {
        let name = match t.dtype {
            GgmlDType::F32 => "F32",
            GgmlDType::Q4_1 => "Q4_1",
            GgmlDType::Q8_0 => "Q8_0",
            other => panic!("unexpected type {other:?} for {}", t.name),
        };
        *counts.entry(name.to_string()).or_insert(0u64) += 1;
    }
    let expected: std::collections::BTreeMap<String, u64> =
        facts["gguf_tensor_types"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    assert_eq!(counts, expected);
    let vocab = facts["vocab_size"].as_u64().unwrap() as usize;
    let hidden = facts["hidden_size"].as_u64().unwrap() as usize;
    let embd = h.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dtype, embd.dims.clone()), (GgmlDType::Q8_0, vec![vocab, hidden]));
    assert!(!f.has_tensor("output.weight"), "the LM head is tied");
    assert_eq!(f.meta_u32("llama.context_length").unwrap() as u64, facts["gguf_context_length"].as_u64().unwrap());

    // candle's own reader agrees on every tensor and the data offset.
    let mut file = std::fs::File::open(&path).unwrap();
    let theirs = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    assert_eq!(theirs.tensor_data_offset, f.content().tensor_data_offset);
    assert_eq!(theirs.tensor_infos.len(), f.content().tensor_infos.len());
    for (name, info) in &theirs.tensor_infos {
        let ours = &f.content().tensor_infos[name];
        assert_eq!(
            (ours.ggml_dtype, ours.shape.dims(), ours.offset),
            (info.ggml_dtype, info.shape.dims(), info.offset)
        );
    }
    let mut keys: Vec<_> = theirs.metadata.keys().collect();
    let mut our_keys: Vec<_> = f.metadata().keys().collect();
    keys.sort();
    our_keys.sort();
    assert_eq!(keys, our_keys);
}

#[test]
fn real_model_q4_1_and_q8_0_dequantize_bit_exactly_from_raw_bytes() {
    let path = common::default_gguf();
    let f = GgufFile::open(&path).unwrap();
    let raw = std::fs::read(&path).unwrap();
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();

    // Q4_1 (tests/golden/README.md): w[j] = (d * q[j]) + m, low nibbles first.
    let name = "blk.0.attn_q.weight";
    let t = f.header().tensor(name).unwrap();
    assert_eq!(t.dtype, GgmlDType::Q4_1);
    let ours: Vec<f32> =
        f.dequantize(name, DType::F32, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let n_blocks = t.len as usize / 20;
    for block in [0, 1, 17, n_blocks - 1] {
        let b = &raw[t.start as usize + 20 * block..][..20];
        let (d, m, qs) = (f16(&b[0..2]), f16(&b[2..4]), &b[4..20]);
        for j in 0..32 {
            let q = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
            let expected = (d * q as f32) + m;
            let got = ours[32 * block + j];
            assert_eq!(got.to_bits(), expected.to_bits(), "block {block} weight {j}: {got} vs {expected}");
        }
    }

    // Q8_0: w = q * d.
    let t = f.header().tensor("token_embd.weight").unwrap();
    let emb = f.qtensor("token_embd.weight", &Device::Cpu).unwrap();
    let row0: Vec<f32> = emb.dequantize(&Device::Cpu).unwrap().get(0).unwrap().to_vec1().unwrap();
    let b = &raw[t.start as usize..][..34];
    for j in 0..32 {
        let expected = (b[2 + j] as i8) as f32 * f16(&b[0..2]);
        assert_eq!(row0[j].to_bits(), expected.to_bits(), "token_embd weight {j}");
    }
    assert_eq!(&f.tensor_data("token_embd.weight").unwrap()[..34], b);
}

#[test]
fn errors_name_the_file() {
    let e = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(matches!(e, GgufError::Io { .. }) && e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    let f = GgufFile::from_bytes(tiny_model(), "tiny.gguf").unwrap();
    let e = f.qtensor("nope", &Device::Cpu).err().unwrap();
    assert_eq!(e.to_string(), "tiny.gguf: no tensor named `nope`");
    let e = f.meta_str("llama.block_count").err().unwrap();
    assert!(e.to_string().starts_with("tiny.gguf: metadata `llama.block_count`: expected a string"), "{e}");
}
