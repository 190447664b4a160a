//! `open_safetensors` against bad files (RELIABILITY.md rows S1, S2): truncations, header lengths
//! past the end or over the cap, headers that are not a JSON object in UTF-8, duplicate names,
//! holes, dtype/shape/offset mismatches. Every file is built here at test time.

use candle_core::{DType, Device, Tensor};
use graft::io::safetensors::{check_safetensors, open_safetensors, SafetensorsError, SafetensorsErrorKind};
use std::collections::HashMap;
use std::path::Path;

/// A small valid file: two tensors of two dtypes.
fn small_file() -> Vec<u8> {
    let a = Tensor::from_vec((0..6).map(|i| i as f32 * 0.5).collect::<Vec<_>>(), (2, 3), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(vec![1i64, -2, 3], 3, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    candle_core::safetensors::save(&HashMap::from([("a".to_string(), a), ("b".to_string(), b)]), &path).unwrap();
    std::fs::read(&path).unwrap()
}

/// A file with a hand-written header and `data` zero bytes.
fn crafted(header: &[u8], data: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// Writes `bytes` to a file and opens it; also runs the in-memory check, which must agree.
fn open(bytes: &[u8]) -> Result<graft::io::safetensors::SafetensorsFile, SafetensorsError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let in_memory = check_safetensors(bytes, Path::new("mem.safetensors"));
    let opened = open_safetensors(&path);
    assert_eq!(in_memory.is_ok(), opened.is_ok(), "file and in-memory checks disagree: {in_memory:?}");
    if let Err(e) = &opened {
        assert!(e.to_string().contains("adapter.safetensors"), "error does not name the file: {e}");
    }
    opened
}

fn kind(bytes: &[u8]) -> SafetensorsErrorKind {
    match open(bytes) {
        Err(e) => e.kind,
        Ok(_) => panic!("file was accepted"),
    }
}

#[test]
fn a_valid_file_opens_and_loads() {
    let f = open(&small_file()).unwrap();
    assert_eq!(f.names(), ["a", "b"]);
    assert_eq!(f.info("a").unwrap().shape, [2, 3]);
    assert_eq!(f.info("b").unwrap().dtype, DType::I64);
    let a = f.tensor("a", &Device::Cpu).unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    assert_eq!(f.load_all(&Device::Cpu).unwrap().len(), 2);
    let e = f.tensor("c", &Device::Cpu).unwrap_err();
    assert!(matches!(e.kind, SafetensorsErrorKind::MissingTensor { .. }), "{e}");
}

#[test]
fn s1_every_truncation_is_rejected() {
    let bytes = small_file();
    for n in 0..bytes.len() {
        match open(&bytes[..n]) {
            Err(e) => assert!(
                matches!(
                    e.kind,
                    SafetensorsErrorKind::TooSmall { .. }
                        | SafetensorsErrorKind::HeaderPastEof { .. }
                        | SafetensorsErrorKind::DataSizeMismatch { .. }
                ),
                "prefix {n}: {e}"
            ),
            Ok(_) => panic!("prefix {n} of {} accepted", bytes.len()),
        }
    }
}

#[test]
fn s1_header_lengths_past_the_end_or_over_the_cap_are_rejected() {
    let mut bytes = small_file();
    let file_len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(kind(&bytes), SafetensorsErrorKind::HeaderTooLarge { header_len, .. } if header_len == 1 << 40));
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(kind(&bytes), SafetensorsErrorKind::HeaderTooLarge { .. }));
    bytes[..8].copy_from_slice(&(file_len - 7).to_le_bytes());
    assert!(
        matches!(kind(&bytes), SafetensorsErrorKind::HeaderPastEof { header_len, .. } if header_len == file_len - 7)
    );
}

#[test]
fn s2_headers_that_are_not_a_json_object_are_rejected() {
    let good = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(open(&crafted(good, 8)).is_ok());
    for bad in [&b"[]"[..], b" {}", b"\n{}", b"\"{\"", b""] {
        assert!(matches!(kind(&crafted(bad, 0)), SafetensorsErrorKind::NotAnObject { .. }), "{bad:?}");
    }
    // Starts with `{` but is not JSON.
    assert!(matches!(kind(&crafted(b"{not json", 0)), SafetensorsErrorKind::InvalidHeader(_)));
}

#[test]
fn s2_invalid_utf8_is_rejected() {
    let header = b"{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    match kind(&crafted(header, 8)) {
        SafetensorsErrorKind::InvalidUtf8 { offset } => assert_eq!(offset, 8 + 3),
        other => panic!("{other}"),
    }
}

#[test]
fn s2_duplicate_names_are_rejected() {
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(matches!(kind(&crafted(header, 8)), SafetensorsErrorKind::DuplicateKey { key } if key == "a"));
}

#[test]
fn s2_holes_overlaps_and_inconsistent_sizes_are_rejected() {
    let cases: [(&[u8], usize); 5] = [
        // A hole between tensors (a polyglot could hide data there).
        (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#, 24),
        // Overlap.
        (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12),
        // Shape and dtype need 12 bytes, offsets give 8.
        (br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8),
        // Shape product overflows.
        (br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#, 8),
        // Unknown dtype.
        (br#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, 8),
    ];
    for (header, data) in cases {
        let k = kind(&crafted(header, data));
        assert!(matches!(k, SafetensorsErrorKind::InvalidHeader(_)), "{}: {k}", String::from_utf8_lossy(header));
    }
    // Bytes after the declared data.
    let k = kind(&crafted(br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 9));
    assert!(matches!(k, SafetensorsErrorKind::DataSizeMismatch { expected: 8, found: 9 }), "{k}");
    // Valid, but candle cannot hold booleans.
    let k = kind(&crafted(br#"{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#, 2));
    assert!(matches!(k, SafetensorsErrorKind::UnsupportedDType { .. }), "{k}");
}

#[test]
fn errors_convert_to_graft_error_with_the_path() {
    let e = open_safetensors("/nonexistent/adapter.safetensors").err().unwrap();
    assert!(matches!(e.kind, SafetensorsErrorKind::Io(_)));
    let g: graft::GraftError = e.into();
    assert!(g.to_string().starts_with("/nonexistent/adapter.safetensors: "), "{g}");
}
