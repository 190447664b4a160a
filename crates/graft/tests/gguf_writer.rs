//! `GgufWriter`: what it writes reads back identically with `GgufFile` (and with candle's own
//! reader), quantized tensors match candle's quantize→dequantize, layout follows the alignment,
//! bad input is refused, and files appear atomically.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use graft::io::gguf::{GgufError, GgufFile, GgufWriter};
use std::collections::HashMap;

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| scale * ((i as f32) * 0.731 + 0.2).sin()).collect()
}

fn tensor(dims: &[usize], scale: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(ramp(n, scale), dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// One metadata value of every GGUF type, arrays of scalars, strings, nested and empty arrays.
fn all_metadata() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.u64", Value::U64(u64::MAX - 1)),
        ("t.i64", Value::I64(i64::MIN + 1)),
        ("t.f32", Value::F32(1.0e-5)),
        ("t.f64", Value::F64(-1.0e-300)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo <|im_start|> 🌍".into())),
        ("t.empty_string", Value::String(String::new())),
        ("t.u32s", Value::Array(vec![Value::U32(1), Value::U32(2), Value::U32(3)])),
        ("t.f32s", Value::Array(vec![Value::F32(0.5), Value::F32(-0.0), Value::F32(f32::INFINITY)])),
        ("t.bools", Value::Array(vec![Value::Bool(false), Value::Bool(true)])),
        ("t.strings", Value::Array(["a", "", "Ġ t", "日本"].map(|s| Value::String(s.into())).to_vec())),
        (
            "t.nested",
            Value::Array(vec![
                Value::Array(vec![Value::I64(1), Value::I64(-2)]),
                Value::Array(vec![Value::String("x".into())]),
                Value::Array(vec![]),
            ]),
        ),
        ("t.empty", Value::Array(vec![])),
    ]
}

#[test]
fn round_trip_preserves_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let dev = Device::Cpu;

    let mut w = GgufWriter::new();
    for (k, v) in all_metadata() {
        w.add_metadata(k, v).unwrap();
    }
    let f32_t = tensor(&[3, 5], 1.5);
    let f16_t = tensor(&[4, 8], 3.0);
    let bf16_t = tensor(&[2, 16], 7.0);
    let q8_t = tensor(&[6, 64], 0.8);
    let q41 = QTensor::quantize(&tensor(&[8, 32], 0.05), GgmlDType::Q4_1).unwrap();
    let q41_bytes = q41.data().unwrap().to_vec();
    w.add_tensor("dense.f32", &f32_t, GgmlDType::F32).unwrap();
    w.add_tensor("dense.f16", &f16_t.to_dtype(DType::F16).unwrap(), GgmlDType::F16).unwrap();
    w.add_tensor("dense.bf16", &bf16_t, GgmlDType::BF16).unwrap();
    w.add_tensor("quant.q8_0", &q8_t, GgmlDType::Q8_0).unwrap();
    w.add_qtensor("quant.q4_1", q41).unwrap();
    w.write(&path).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.header().version, 3);
    let expected: HashMap<_, _> = all_metadata().into_iter().collect();
    assert_eq!(f.metadata().len(), expected.len());
    for (k, v) in &expected {
        // Debug output of floats is exact and tells -0.0 from 0.0.
        assert_eq!(format!("{:?}", f.meta(k).unwrap()), format!("{v:?}"), "metadata {k}");
    }
    assert_eq!(
        f.tensor_names().collect::<Vec<_>>(),
        ["dense.f32", "dense.f16", "dense.bf16", "quant.q8_0", "quant.q4_1"]
    );

    let read = |name: &str| f.dequantize(name, DType::F32, &dev).unwrap();
    assert_eq!(read("dense.f32").dims(), &[3, 5]);
    assert_eq!(values(&read("dense.f32")), values(&f32_t), "F32 is stored exactly");
    let f16_expected = values(&f16_t.to_dtype(DType::F16).unwrap());
    assert_eq!(values(&read("dense.f16")), f16_expected);
    let bf16_expected = values(&bf16_t.to_dtype(DType::BF16).unwrap());
    assert_eq!(values(&read("dense.bf16")), bf16_expected);
    assert_eq!(f.qtensor("dense.bf16", &dev).unwrap().dtype(), GgmlDType::BF16);

    let q8_expected = QTensor::quantize(&q8_t, GgmlDType::Q8_0).unwrap().dequantize(&dev).unwrap();
    let q8 = read("quant.q8_0");
    assert_eq!(q8.dims(), &[6, 64]);
    assert_eq!(values(&q8), values(&q8_expected), "Q8_0 equals candle's quantize -> dequantize");
    assert_ne!(values(&q8), values(&q8_t), "Q8_0 is lossy: the test would notice a dense copy");

    assert_eq!(f.tensor_data("quant.q4_1").unwrap(), q41_bytes, "pass-through keeps the blocks");
    assert_eq!(f.qtensor("quant.q4_1", &dev).unwrap().shape().dims(), &[8, 32]);
}

#[test]
fn candle_reads_what_graft_writes() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
    w.add_tensor("a", &tensor(&[2, 32], 1.0), GgmlDType::Q8_0).unwrap();
    w.add_tensor("b", &tensor(&[7], 1.0), GgmlDType::F32).unwrap();
    let bytes = w.to_bytes().unwrap();
    let mut cursor = std::io::Cursor::new(&bytes);
    let theirs = candle_core::quantized::gguf_file::Content::read(&mut cursor).unwrap();
    let ours = GgufFile::from_bytes(bytes.clone(), "mem.gguf").unwrap();
    assert_eq!(theirs.tensor_data_offset, ours.content().tensor_data_offset);
    for name in ["a", "b"] {
        let q = theirs.tensor(&mut cursor, name, &Device::Cpu).unwrap();
        assert_eq!(q.data().unwrap().to_vec(), ours.tensor_data(name).unwrap());
        assert_eq!(q.shape().dims(), ours.qtensor(name, &Device::Cpu).unwrap().shape().dims());
    }
}

#[test]
fn tensors_follow_the_alignment() {
    for align in [1u32, 8, 32, 64, 4096] {
        let mut w = GgufWriter::new();
        w.set_alignment(align).unwrap();
        w.add_tensor("x", &tensor(&[3], 1.0), GgmlDType::F32).unwrap();
        w.add_tensor("y", &tensor(&[1, 32], 1.0), GgmlDType::Q8_0).unwrap();
        w.add_tensor("z", &tensor(&[5], 1.0), GgmlDType::F16).unwrap();
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::from_bytes(bytes.clone(), "aligned.gguf").unwrap();
        let h = f.header();
        assert_eq!(h.alignment, u64::from(align));
        assert!(h.tensors.iter().all(|t| t.start % u64::from(align) == 0), "alignment {align}");
        assert_eq!(bytes.len() as u64 % u64::from(align), 0, "every tensor is padded, the last too");
        assert_eq!(values(&f.dequantize("x", DType::F32, &Device::Cpu).unwrap()), ramp(3, 1.0));
    }
    let mut w = GgufWriter::new();
    for bad in [0u32, 3, 48, 1 << 21] {
        assert!(matches!(w.set_alignment(bad), Err(GgufError::Build { .. })), "alignment {bad}");
    }
    assert!(w.add_metadata("general.alignment", Value::I32(32)).is_err());
    assert_eq!(w.alignment(), 32);
}

#[test]
fn bad_input_is_refused() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::U8(1)).unwrap();
    let refused = |r: Result<&mut GgufWriter, GgufError>, what: &str| match r {
        Err(GgufError::Build { reason, .. }) => reason,
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => panic!("{what}: accepted"),
    };
    refused(w.add_metadata("k", Value::U8(2)), "duplicate key");
    refused(w.add_metadata("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)])), "mixed array");
    refused(w.add_metadata("nul", Value::String("x\0".into())), "trailing NUL");
    let mut deep = Value::U8(0);
    for _ in 0..5 {
        deep = Value::Array(vec![deep]);
    }
    refused(w.add_metadata("deep", deep), "depth 5");
    let mut four = Value::U8(0);
    for _ in 0..4 {
        four = Value::Array(vec![four]);
    }
    w.add_metadata("four", four).unwrap();

    let t = tensor(&[2, 32], 1.0);
    w.add_tensor("t", &t, GgmlDType::Q8_0).unwrap();
    refused(w.add_tensor("t", &t, GgmlDType::F32), "duplicate tensor");
    refused(w.add_tensor("u", &t, GgmlDType::Q8_1), "Q8_1");
    refused(w.add_tensor("v", &tensor(&[2, 33], 1.0), GgmlDType::Q8_0), "block mismatch");
    refused(w.add_tensor("w", &tensor(&[1, 1, 1, 1, 2], 1.0), GgmlDType::F32), "5 dims");
    let long = "x".repeat(64);
    let reason = refused(w.add_tensor(&long, &t, GgmlDType::F32), "long name");
    assert!(reason.contains("63"), "{reason}");
    // What was refused left nothing behind.
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "w.gguf").unwrap();
    assert_eq!(f.tensor_names().collect::<Vec<_>>(), ["t"]);
    assert_eq!(f.metadata().len(), 2);
}

#[test]
fn set_and_remove_metadata_rewrite_values() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U32(1)).unwrap();
    w.add_metadata("b", Value::String("x".into())).unwrap();
    w.set_metadata("a", Value::F32(2.5)).unwrap();
    w.set_metadata("c", Value::I32(-1)).unwrap();
    assert!(w.set_metadata("a", Value::String("x\0".into())).is_err(), "the add rules apply");
    w.set_metadata("general.alignment", Value::U32(64)).unwrap();
    assert_eq!(w.alignment(), 64);
    assert!(w.set_metadata("general.alignment", Value::U32(3)).is_err());
    assert_eq!(w.alignment(), 64, "a refused value changes nothing");
    assert!(matches!(w.remove_metadata("b"), Some(Value::String(s)) if s == "x"));
    assert!(w.remove_metadata("b").is_none());
    assert!(matches!(w.remove_metadata("general.alignment"), Some(Value::U32(64))));
    assert_eq!(w.alignment(), 32);
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "w.gguf").unwrap();
    let mut keys: Vec<_> = f.metadata().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(f.meta_f32("a").unwrap(), 2.5);
    assert!(matches!(f.meta("c").unwrap(), Value::I32(-1)));
}

#[test]
fn write_is_atomic_and_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    std::fs::write(&path, b"old").unwrap();
    let mut w = GgufWriter::new();
    w.add_tensor("x", &tensor(&[4], 1.0), GgmlDType::F32).unwrap();
    w.write(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["out.gguf"], "no temporary file is left");
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());

    let missing = dir.path().join("no/such/dir/out.gguf");
    let e = w.write(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }) && e.to_string().contains("no/such/dir"), "{e}");
}

/// Re-exports the whole real model through the writer (quantized tensors passed through) and
/// checks every byte of every tensor and every metadata value survives.
#[test]
fn real_model_round_trips_through_the_writer() {
    let src = GgufFile::open(common::default_gguf()).unwrap();
    let dev = Device::Cpu;
    let mut w = GgufWriter::new();
    let mut keys: Vec<_> = src.metadata().keys().cloned().collect();
    keys.sort();
    for k in &keys {
        w.add_metadata(k.clone(), src.metadata()[k].clone()).unwrap();
    }
    for name in src.tensor_names() {
        w.add_qtensor(name, src.qtensor(name, &dev).unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.gguf");
    w.write(&path).unwrap();
    let copy = GgufFile::open(&path).unwrap();
    assert_eq!(copy.tensor_names().collect::<Vec<_>>(), src.tensor_names().collect::<Vec<_>>());
    for name in src.tensor_names() {
        assert_eq!(copy.tensor_data(name).unwrap(), src.tensor_data(name).unwrap(), "{name}");
        let (a, b) = (&copy.content().tensor_infos[name], &src.content().tensor_infos[name]);
        assert_eq!((a.ggml_dtype, a.shape.dims()), (b.ggml_dtype, b.shape.dims()), "{name}");
    }
    for k in &keys {
        assert_eq!(format!("{:?}", copy.meta(k).unwrap()), format!("{:?}", src.meta(k).unwrap()), "{k}");
    }
}
