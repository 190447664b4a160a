//! The WAV reader on crafted, damaged and truncated files: each gives an error that names the
//! file and says what is wrong, and none panics.

use std::path::{Path, PathBuf};

use super::audio::{decode_wav, read_wav};
use crate::GraftError;

/// A canonical 44-byte-header PCM WAV: `channels`, `rate`, `bits`, `format` tag, and `data`.
fn wav_bytes(format: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block_align = channels * (bits / 8);
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend((36 + data.len() as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(format.to_le_bytes());
    b.extend(channels.to_le_bytes());
    b.extend(rate.to_le_bytes());
    b.extend((rate * u32::from(block_align)).to_le_bytes());
    b.extend(block_align.to_le_bytes());
    b.extend(bits.to_le_bytes());
    b.extend(b"data");
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(data);
    b
}

/// 100 samples of 16-bit mono PCM at 16 kHz (a ramp).
fn good() -> Vec<u8> {
    let data: Vec<u8> = (0..100i16).flat_map(|i| (i * 300).to_le_bytes()).collect();
    wav_bytes(1, 1, 16_000, 16, &data)
}

/// Writes `bytes` to `dir/name` and reads it as WAV, returning the error (it must fail).
fn read_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    match read_wav(&path) {
        Ok(w) => panic!("{name} was read: {} samples", w.samples.len()),
        Err(e @ GraftError::Audio { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "{msg} does not name the file");
            msg
        }
        Err(other) => panic!("{name}: not an audio error: {other}"),
    }
}

#[test]
fn the_good_file_reads() {
    let w = decode_wav(std::io::Cursor::new(good()), Path::new("good.wav")).unwrap();
    assert_eq!(w.samples.len(), 100);
    assert_eq!(w.samples[1], 300.0 / 32768.0);
}

#[test]
fn a_missing_file_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.wav");
    match read_wav(&path) {
        Err(e @ GraftError::Io { .. }) => assert!(e.to_string().contains("absent.wav"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn crafted_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", vec![], "ends inside the header"),
        ("text.wav", b"this is a text file, not audio at all, no RIFF header".to_vec(), "not a WAV file"),
        ("riff-not-wave.wav", [&b"RIFF\x10\0\0\0AVI LIST"[..], &[0; 8]].concat(), "not a WAV file"),
        ("header-only.wav", good()[..30].to_vec(), "ends inside the header"),
        ("zero-channels.wav", wav_bytes(1, 0, 16_000, 16, &[0; 8]), "zero channels"),
        ("zero-rate.wav", wav_bytes(1, 1, 0, 16, &[0; 8]), "sample rate is 0 Hz"),
        ("too-fast.wav", wav_bytes(1, 1, 1_000_000, 16, &[0; 8]), "outside the supported"),
        ("adpcm.wav", wav_bytes(2, 1, 16_000, 16, &[0; 8]), "unsupported WAV encoding"),
        ("mulaw.wav", wav_bytes(7, 1, 16_000, 8, &[0; 8]), "unsupported WAV encoding"),
        ("float64.wav", wav_bytes(3, 1, 16_000, 64, &[0; 16]), "bits per sample is not 32"),
        ("no-data.wav", wav_bytes(1, 1, 16_000, 16, &[]), "holds no audio"),
        ("odd-data.wav", wav_bytes(1, 1, 16_000, 16, &[0; 7]), "not a multiple of sample size"),
        ("nan.wav", wav_bytes(3, 1, 16_000, 32, &[0, 0, 0xc0, 0x7f]), "not a finite number"),
        ("inf.wav", wav_bytes(3, 1, 16_000, 32, &[0, 0, 0x80, 0x7f]), "not a finite number"),
    ];
    for (name, bytes, expected) in cases {
        let msg = read_err(d, name, &bytes);
        assert!(msg.contains(expected), "{name}: `{msg}` does not say `{expected}`");
    }
}

#[test]
fn truncated_files_fail_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let full = good();
    for len in 0..full.len() {
        let msg = read_err(dir.path(), "cut.wav", &full[..len]);
        if len >= 44 {
            assert!(msg.contains("truncated"), "cut at {len}: {msg}");
            assert!(msg.contains(&format!("ends after {}", (len - 44) / 2)), "cut at {len}: {msg}");
        }
    }
}

#[test]
fn a_huge_declared_length_fails_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = good();
    bytes[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let msg = read_err(dir.path(), "claims-4gb.wav", &bytes);
    assert!(msg.contains("declares 2147483640 samples but the file ends after 100"), "{msg}");
}

#[test]
fn corrupted_header_bytes_never_panic() {
    // Every header byte set to a few telling values (and the sizes of the chunks stretched):
    // the reader either reads something or errors, naming the file.
    let full = good();
    let mut tried = 0;
    for pos in 0..44 {
        for v in [0u8, 1, 2, 3, 0x7f, 0x80, 0xfe, 0xff, full[pos].wrapping_add(1), full[pos].wrapping_sub(1)] {
            let mut bytes = full.clone();
            bytes[pos] = v;
            tried += 1;
            if let Err(e) = decode_wav(std::io::Cursor::new(bytes), Path::new("mutant.wav")) {
                assert!(e.to_string().contains("mutant.wav"), "{e}");
            }
        }
    }
    assert_eq!(tried, 440);
}

#[test]
fn extensible_headers_with_odd_layouts_are_refused_or_read() {
    // WAVE_FORMAT_EXTENSIBLE (0xfffe) with valid-bits values that do not fit the container.
    const PCM_GUID: [u8; 16] = [1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71];
    for valid_bits in [0u16, 12, 16, 20, 24, 33, 64, 0xffff] {
        let mut b = Vec::new();
        let data = [0u8; 8];
        b.extend(b"RIFF");
        b.extend((60 + data.len() as u32).to_le_bytes());
        b.extend(b"WAVEfmt ");
        b.extend(40u32.to_le_bytes());
        b.extend(0xfffeu16.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(16_000u32.to_le_bytes());
        b.extend(32_000u32.to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(22u16.to_le_bytes());
        b.extend(valid_bits.to_le_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(PCM_GUID);
        b.extend(b"data");
        b.extend((data.len() as u32).to_le_bytes());
        b.extend(data);
        match decode_wav(std::io::Cursor::new(b), Path::new("ext.wav")) {
            Ok(w) => assert!(matches!(valid_bits, 0 | 16) && w.samples.len() == 4, "{valid_bits}: read {w:?}"),
            Err(e) => {
                assert!(!matches!(valid_bits, 0 | 16), "{valid_bits}: {e}");
                assert!(e.to_string().contains("ext.wav"), "{e}");
            }
        }
    }
}
