//! PyTorch checkpoints: the real EfficientNet-Lite0 legacy file, and small legacy / zip files
//! built here byte by byte, including hostile and truncated ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use graft::io::torch::{read_tensors, TorchError, TorchErrorKind};
use graft::GraftError;

/// The legacy magic-number pickle.
const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

/// `BINUNICODE s`.
fn s(text: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((text.len() as u32).to_le_bytes());
    out.extend(text.as_bytes());
    out
}

/// `GLOBAL module name`.
fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// `BININT` of a small non-negative number.
fn int(v: u32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend(v.to_le_bytes());
    out
}

/// A tuple of ints: `MARK ints TUPLE`.
fn int_tuple(vals: &[u32]) -> Vec<u8> {
    let mut out = vec![b'('];
    vals.iter().for_each(|&v| out.extend(int(v)));
    out.push(b't');
    out
}

/// The pickle of `OrderedDict(w = tensor)`: a FloatStorage `0` of `numel` elements viewed with
/// `shape` / `stride`, its GLOBALs given by `rebuild` (module, name).
fn state_dict_pickle(rebuild: (&str, &str), numel: u32, shape: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut p = vec![0x80, 0x02];
    p.extend(global("collections", "OrderedDict"));
    p.extend(b")R");
    p.extend(s("w"));
    p.extend(global(rebuild.0, rebuild.1));
    p.push(b'(');
    p.push(b'(');
    p.extend(s("storage"));
    p.extend(global("torch", "FloatStorage"));
    p.extend(s("0"));
    p.extend(s("cpu"));
    p.extend(int(numel));
    p.extend(b"Nt");
    p.push(b'Q');
    p.extend(int(0));
    p.extend(int_tuple(shape));
    p.extend(int_tuple(stride));
    p.push(0x89);
    p.extend(global("collections", "OrderedDict"));
    p.extend(b")R");
    p.extend(b"tR");
    p.extend(b"s.");
    p
}

/// A legacy file: magic, protocol 1001, sys_info, `main`, the key list `['0']`, then the storage
/// `0` with element count `count` and the bytes `data`.
fn legacy_file(main: &[u8], count: u64, data: &[u8]) -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.extend([0x80, 0x02, b'M', 0xe9, 0x03, b'.']);
    f.extend([0x80, 0x02, b'}']);
    f.extend(s("little_endian"));
    f.extend([0x88, b's', b'.']);
    f.extend(main);
    f.extend([0x80, 0x02, b']', b'(']);
    f.extend(s("0"));
    f.extend(b"e.");
    f.extend(count.to_le_bytes());
    f.extend(data);
    f
}

/// The bytes of the f32 values 0, 1, ..., n-1.
fn floats(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

/// The tensor file of a well-formed 2x3 state dict.
fn good_legacy() -> Vec<u8> {
    legacy_file(&state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 6, &[2, 3], &[3, 1]), 6, &floats(6))
}

/// Writes `bytes` to `name` in `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Reads `bytes` as a checkpoint file.
fn read_bytes(bytes: &[u8]) -> graft::Result<Vec<(String, Tensor)>> {
    let dir = tempfile::tempdir().unwrap();
    read_tensors(write(dir.path(), "m.pth", bytes), &Device::Cpu)
}

/// The reader's error kind, failing the test on any other error.
fn torch_kind(result: graft::Result<Vec<(String, Tensor)>>) -> TorchErrorKind {
    match result {
        Err(GraftError::Torch(TorchError { kind, .. })) => kind,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// The single tensor `w` as rows.
fn rows(tensors: &[(String, Tensor)]) -> Vec<Vec<f32>> {
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "w");
    tensors[0].1.to_vec2().unwrap()
}

#[test]
fn legacy_state_dict_is_read_with_its_strides() {
    assert_eq!(rows(&read_bytes(&good_legacy()).unwrap()), [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]);
    // A transposed view (stride 1 on the first dimension), as in the EfficientNet checkpoint.
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 6, &[3, 2], &[1, 3]);
    let t = read_bytes(&legacy_file(&main, 6, &floats(6))).unwrap();
    assert_eq!(rows(&t), [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]);
}

#[test]
fn disallowed_globals_are_refused_not_called() {
    for (module, name) in [("os", "system"), ("builtins", "eval"), ("torch", "load"), ("subprocess", "Popen")] {
        let main = state_dict_pickle((module, name), 6, &[2, 3], &[3, 1]);
        let kind = torch_kind(read_bytes(&legacy_file(&main, 6, &floats(6))));
        let msg = kind.to_string();
        assert!(
            matches!(&kind, TorchErrorKind::Disallowed { module: m, name: n, .. } if m == module && n == name),
            "{msg}"
        );
        assert!(msg.contains(&format!("{module}.{name}")) && msg.contains("nothing is executed"), "{msg}");
    }
}

#[test]
fn storage_sizes_beyond_the_file_are_refused_before_allocating() {
    // 2^31 - 1 elements claimed in the pickle and in the storage table: 8 GiB the file lacks.
    let huge = i32::MAX as u32;
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), huge, &[2, 3], &[3, 1]);
    let kind = torch_kind(read_bytes(&legacy_file(&main, u64::from(huge), &floats(6))));
    assert!(matches!(kind, TorchErrorKind::Truncated { .. }), "{kind}");
    // The element count of the storage table disagrees with the pickle.
    let kind = torch_kind(read_bytes(&legacy_file(
        &state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 6, &[2, 3], &[3, 1]),
        u64::MAX,
        &floats(6),
    )));
    assert!(kind.to_string().contains("elements stored"), "{kind}");
    // A view reaching past its storage.
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 6, &[4, 3], &[3, 1]);
    let kind = torch_kind(read_bytes(&legacy_file(&main, 6, &floats(6))));
    assert!(matches!(kind, TorchErrorKind::Tensor { .. }) && kind.to_string().contains("reach element 11"), "{kind}");
}

#[test]
fn zero_strides_cannot_blow_a_small_file_up() {
    // One stored float viewed as a 2^15 x 2^15 tensor (4 GiB) through zero strides.
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 1, &[1 << 15, 1 << 15], &[0, 0]);
    let kind = torch_kind(read_bytes(&legacy_file(&main, 1, &floats(1))));
    assert!(kind.to_string().contains("more than 4 times the 4 bytes stored"), "{kind}");
    // A small broadcast view is fine.
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 1, &[2, 2], &[0, 0]);
    assert_eq!(rows(&read_bytes(&legacy_file(&main, 1, &floats(1))).unwrap()), [[0.0, 0.0], [0.0, 0.0]]);
}

#[test]
fn every_byte_flip_is_read_or_refused_without_panicking() {
    let file = good_legacy();
    let (mut read, mut refused) = (0, 0);
    for i in 0..file.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = file.clone();
            bad[i] ^= flip;
            match read_bytes(&bad) {
                Ok(_) => read += 1,
                // A damaged first bytes no longer look like a legacy file; the safetensors
                // reader (the fallback for 8-byte heads) refuses it then.
                Err(GraftError::Torch(_)) => refused += 1,
                Err(GraftError::Safetensors(_)) if i < 4 => refused += 1,
                Err(other) => panic!("byte {i} ^ {flip:#x}: unexpected error kind {other}"),
            }
        }
    }
    assert!(read > 0 && refused > read, "{read} read, {refused} refused");
}

#[test]
fn every_truncation_is_a_clear_error() {
    let file = good_legacy();
    for len in 0..file.len() {
        let kind = torch_kind(read_bytes(&file[..len]));
        let msg = kind.to_string();
        match len {
            0..=3 => assert!(matches!(kind, TorchErrorKind::UnknownFormat), "{len}: {msg}"),
            _ => assert!(matches!(kind, TorchErrorKind::Truncated { .. }), "{len}: {msg}"),
        }
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(torch_kind(read_bytes(&longer)).to_string().contains("1 bytes follow the last storage"));
}

#[test]
fn nesting_and_copy_bombs_are_bounded() {
    // 100 nested tuples.
    let mut p = vec![0x80, 0x02, b')'];
    p.extend([0x85; 100]);
    p.push(b'.');
    let kind = torch_kind(read_bytes(&legacy_file(&p, 0, &[])));
    assert!(kind.to_string().contains("nested deeper than"), "{kind}");
    // A memoized list of 1000 items appended to 20,000 times: each append copies the shared list.
    let mut p = vec![0x80, 0x02, b']', b'('];
    p.extend(std::iter::repeat_n([b'K', 0], 1000).flatten());
    p.extend([b'e', b'q', 0]);
    for _ in 0..20_000 {
        p.extend([b'h', 0, b'K', 0, b'a', b'0']);
    }
    p.push(b'.');
    let kind = torch_kind(read_bytes(&legacy_file(&p, 0, &[])));
    assert!(kind.to_string().contains("copied too often"), "{kind}");
}

#[test]
fn zip_format_and_safetensors_share_the_entry_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pth");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let main = state_dict_pickle(("torch._utils", "_rebuild_tensor_v2"), 6, &[3, 2], &[2, 1]);
    for (name, bytes) in [("m/data.pkl", main), ("m/byteorder", b"little".to_vec()), ("m/data/0", floats(6))] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
    let t = read_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(rows(&t), [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]);

    let st = dir.path().join("m.safetensors");
    let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("w".to_string(), w)]), &st).unwrap();
    assert_eq!(rows(&read_tensors(&st, &Device::Cpu).unwrap()), [[1.0, 2.0], [3.0, 4.0]]);

    let kind = torch_kind(read_bytes(b"hello"));
    assert!(matches!(kind, TorchErrorKind::UnknownFormat), "{kind}");
}

#[test]
fn efficientnet_lite0_legacy_checkpoint_is_read() {
    let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
    let tensors = read_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 296);
    assert_eq!(tensors[0].0, "_conv_stem.weight");
    assert_eq!(tensors[295].0, "_fc.bias");
    let get = |name: &str| &tensors.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(get("_conv_stem.weight").dims(), [32, 3, 3, 3]);
    assert_eq!(get("_fc.weight").dims(), [1000, 1280]);
    assert_eq!(get("_bn0.num_batches_tracked").dtype(), DType::I64);
    let floats: usize = tensors.iter().filter(|(_, t)| t.dtype() == DType::F32).map(|(_, t)| t.elem_count()).sum();
    assert_eq!(floats, 4_694_024);
    // Values read independently with Python's own unpickler and the storage strides (most
    // weights of this file are stored transposed).
    let at = |name: &str, idx: &[usize]| {
        let mut t = get(name).clone();
        for &i in idx {
            t = t.get(i).unwrap();
        }
        t.to_scalar::<f32>().unwrap()
    };
    assert_eq!(at("_fc.weight", &[1, 0]), -0.004_970_256_2);
    assert_eq!(at("_fc.weight", &[0, 1]), -0.094_708_71);
    assert_eq!(at("_fc.weight", &[999, 1279]), 0.040_857_97);
    assert_eq!(at("_conv_stem.weight", &[1, 0, 0, 0]), -0.296_026_83);
    assert_eq!(at("_conv_stem.weight", &[0, 1, 2, 0]), 0.191_462_89);
    assert_eq!(at("_blocks.15._project_conv.weight", &[5, 7, 0, 0]), 0.031_348_81);
}
