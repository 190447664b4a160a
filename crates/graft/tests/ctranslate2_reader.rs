//! The CTranslate2 `model.bin` reader: Whisper tiny.en (the `whisper-tiny-en` asset, fetched
//! into the cache on first use) read in full, its sizes and fused projections; the sizes of
//! Whisper base (`whisper-base`, joined from two parts); then crafted
//! files, valid and hostile (truncated at every byte, huge counts and shapes, bad versions,
//! dtypes, strings, names and aliases), each refused with its own error and without panicking.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use graft::io::ctranslate2::whisper::WhisperFolder;
use graft::io::ctranslate2::{Ct2DType, Ct2Error, Ct2ErrorKind, Ct2Model, ExpectedBytes};
use graft::GraftError;

/// The whisper-tiny-en folder, fetched into the cache if needed.
fn tiny_en() -> PathBuf {
    graft::assets::ensure("whisper-tiny-en", false).expect("fetch whisper-tiny-en")
}

/// The largest |a − b| over two tensors of the same shape.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn whisper_tiny_en_model_bin_is_read_in_full() {
    let model = Ct2Model::open(tiny_en().join("model.bin")).expect("read model.bin");
    assert_eq!(model.version(), 6);
    let spec = model.spec().expect("version 6 has a spec");
    assert_eq!((spec.name.as_str(), spec.revision), ("WhisperSpec", 3));
    assert_eq!(model.variables().len(), 148);
    let count = |d: Ct2DType| model.variables().iter().filter(|v| v.dtype == d).count();
    assert_eq!((count(Ct2DType::F16), count(Ct2DType::I8), count(Ct2DType::I16)), (139, 5, 4));
    assert_eq!(model.aliases(), [("decoder/projection/weight".to_string(), "decoder/embeddings/weight".to_string())]);

    for (name, shape) in [
        ("encoder/conv1/weight", &[384, 80, 3][..]),
        ("encoder/conv2/weight", &[384, 384, 3]),
        ("encoder/position_encodings/encodings", &[1500, 384]),
        ("encoder/layer_3/self_attention/linear_0/weight", &[1152, 384]),
        ("decoder/layer_0/attention/linear_1/weight", &[768, 384]),
        ("decoder/embeddings/weight", &[51864, 384]),
        ("decoder/projection/weight", &[51864, 384]),
        ("encoder/num_heads", &[]),
    ] {
        let v = model.variable(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(v.shape, shape, "{name}");
    }
    assert_eq!(model.variable("encoder/conv1/weight").unwrap().num_bytes(), 384 * 80 * 3 * 2);
    assert_eq!(model.scalar_i64("encoder/num_heads").unwrap(), 6);

    // Every variable loads, and the alias shares its variable's values.
    let tensors = model.tensors(&Device::Cpu, DType::F32).expect("all tensors");
    assert_eq!(tensors.len(), 149);
    let get = |n: &str| tensors.iter().find(|(m, _)| m == n).map(|(_, t)| t.clone()).unwrap();
    assert_eq!(max_diff(&get("decoder/projection/weight"), &get("decoder/embeddings/weight")), 0.0);
    let ln = get("encoder/layer_norm/gamma");
    assert_eq!(ln.dtype(), DType::F32);
    // float16 widened to float32 is exact: the f16 copy widens to the same values.
    let half = model.tensor("encoder/layer_norm/gamma", &Device::Cpu, DType::F16).unwrap();
    assert_eq!(max_diff(&half.to_dtype(DType::F32).unwrap(), &ln), 0.0);
}

#[test]
fn whisper_tiny_en_folder_gives_its_sizes_and_config() {
    let folder = WhisperFolder::open(tiny_en()).expect("open folder");
    let d = folder.dims;
    assert_eq!((d.n_mels, d.d_model, d.ffn_dim), (80, 384, 1536));
    assert_eq!((d.encoder_layers, d.decoder_layers, d.encoder_heads, d.decoder_heads), (4, 4, 6, 6));
    assert_eq!((d.vocab_size, d.audio_ctx, d.text_ctx), (51864, 1500, 448));
    assert_eq!(folder.config.lang_ids.len(), 98);
    assert_eq!(folder.config.suppress_ids_begin, [220, 50256]);
    assert_eq!(folder.config.alignment_heads[0], [1, 0]);
    assert!(folder.tokenizer_json.is_file() && folder.vocabulary.is_file());
}

/// The joined two-part `model.bin` of whisper-base reads as one whole model.
#[test]
fn whisper_base_folder_reads_as_one_multilingual_model() {
    let folder = WhisperFolder::open(graft::assets::ensure("whisper-base", false).expect("fetch")).expect("open");
    assert_eq!((folder.model.version(), folder.model.variables().len(), folder.model.aliases().len()), (6, 212, 1));
    let d = folder.dims;
    assert_eq!((d.n_mels, d.d_model, d.ffn_dim), (80, 512, 2048));
    assert_eq!((d.encoder_layers, d.decoder_layers, d.encoder_heads, d.decoder_heads), (6, 6, 8, 8));
    assert_eq!((d.vocab_size, d.audio_ctx, d.text_ctx), (51865, 1500, 448));
    assert_eq!(folder.config.lang_ids.len(), 99);
}

#[test]
fn fused_projections_split_into_equal_row_blocks() {
    let model = Ct2Model::open(tiny_en().join("model.bin")).unwrap();
    let cpu = &Device::Cpu;
    let linear = "encoder/layer_0/self_attention/linear_0";
    let fused_w = model.weight(&format!("{linear}/weight"), cpu, DType::F32).unwrap();
    let fused_b = model.weight(&format!("{linear}/bias"), cpu, DType::F32).unwrap();
    let parts = model.split_fused(linear, &["q_proj", "k_proj", "v_proj"], cpu, DType::F32).unwrap();
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoder/layer_0/self_attention/q_proj/weight",
            "encoder/layer_0/self_attention/k_proj/weight",
            "encoder/layer_0/self_attention/v_proj/weight",
            "encoder/layer_0/self_attention/q_proj/bias",
            "encoder/layer_0/self_attention/k_proj/bias",
            "encoder/layer_0/self_attention/v_proj/bias",
        ]
    );
    for i in 0..3 {
        assert_eq!(parts[i].1.dims(), [384, 384]);
        assert_eq!(max_diff(&parts[i].1, &fused_w.narrow(0, 384 * i, 384).unwrap()), 0.0, "{}", parts[i].0);
        assert_eq!(max_diff(&parts[3 + i].1, &fused_b.narrow(0, 384 * i, 384).unwrap()), 0.0, "{}", parts[3 + i].0);
    }
    // Whisper's key projection has no bias: the converter stores zeros in the middle block only.
    let abs_sum = |t: &Tensor| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(abs_sum(&parts[4].1), 0.0);
    assert!(abs_sum(&parts[3].1) > 0.0 && abs_sum(&parts[5].1) > 0.0);

    // Cross-attention keys and values are fused in two blocks; 768 rows do not split into five.
    let kv = model.split_fused("decoder/layer_1/attention/linear_1", &["k_proj", "v_proj"], cpu, DType::F32).unwrap();
    assert_eq!(
        kv.iter().map(|(_, t)| t.dims().to_vec()).collect::<Vec<_>>(),
        [vec![384, 384], vec![384, 384], vec![384], vec![384]]
    );
    let err = model.split_fused("decoder/layer_1/attention/linear_1", &["a"; 5], cpu, DType::F32).unwrap_err();
    assert!(err.to_string().contains("768 rows cannot be split into 5"), "{err}");
}

/// One variable of a crafted file: name, shape, dtype code and raw bytes.
struct Var {
    name: &'static str,
    shape: Vec<u32>,
    code: u8,
    data: Vec<u8>,
}

fn var(name: &'static str, shape: &[u32], code: u8, data: Vec<u8>) -> Var {
    Var { name, shape: shape.to_vec(), code, data }
}

/// A CTranslate2 string: `u16` length counting the NUL, the bytes, the NUL.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
    out.extend_from_slice(s);
    out.push(0);
}

/// A `model.bin` of format `version` as CTranslate2 writes it (item size and element count
/// before version 4, the spec from version 2, aliases from version 3).
fn model_bin(version: u32, vars: &[Var], aliases: &[(&str, &str)]) -> Vec<u8> {
    let mut out = version.to_le_bytes().to_vec();
    if version >= 2 {
        put_string(&mut out, b"TestSpec");
        out.extend_from_slice(&7u32.to_le_bytes());
    }
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        put_string(&mut out, v.name.as_bytes());
        out.push(v.shape.len() as u8);
        v.shape.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        if version >= 4 {
            out.push(v.code);
            out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
        } else {
            let item = [4u8, 1, 2][v.code as usize];
            out.push(item);
            out.extend_from_slice(&((v.data.len() / item as usize) as u32).to_le_bytes());
        }
        out.extend_from_slice(&v.data);
    }
    if version >= 3 {
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            put_string(&mut out, a.as_bytes());
            put_string(&mut out, t.as_bytes());
        }
    }
    out
}

/// Little-endian bytes of `values`.
fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small valid file: a float32 matrix, a float16 vector, an int8 weight with its scale, an
/// int16 scalar and an alias.
fn small() -> Vec<u8> {
    let f16s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    model_bin(
        6,
        &[
            var("a/weight", &[2, 3], 0, f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            var("a/bias", &[2], 4, f16s),
            var("q/weight", &[2, 2], 1, vec![2, (-4i8) as u8, 6, 8]),
            var("q/weight_scale", &[2], 0, f32s(&[2.0, 4.0])),
            var("num_heads", &[], 2, 3i16.to_le_bytes().to_vec()),
        ],
        &[("b/weight", "a/weight")],
    )
}

/// The error kind of parsing `bytes`.
fn kind_of(bytes: Vec<u8>) -> Ct2ErrorKind {
    match Ct2Model::from_bytes(bytes, Path::new("crafted/model.bin")) {
        Ok(_) => panic!("a hostile file was accepted"),
        Err(Ct2Error { path, kind }) => {
            assert_eq!(path, Path::new("crafted/model.bin"));
            kind
        }
    }
}

#[test]
fn a_crafted_file_reads_back_in_every_dtype_and_version() {
    let cpu = &Device::Cpu;
    let m = Ct2Model::from_bytes(small(), Path::new("small.bin")).expect("valid");
    assert_eq!((m.version(), m.spec().unwrap().name.as_str(), m.spec().unwrap().revision), (6, "TestSpec", 7));
    let w = m.tensor("b/weight", cpu, DType::F32).unwrap();
    assert_eq!(w.to_vec2::<f32>().unwrap(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    assert_eq!(m.tensor("a/bias", cpu, DType::F32).unwrap().to_vec1::<f32>().unwrap(), [1.5, -2.0]);
    let q = m.tensor("q/weight", cpu, DType::F32).unwrap();
    assert_eq!((q.dtype(), q.to_vec2::<i64>().unwrap()), (DType::I64, vec![vec![2, -4], vec![6, 8]]));
    let dq = m.weight("q/weight", cpu, DType::F32).unwrap();
    assert_eq!(dq.to_vec2::<f32>().unwrap(), [[1.0, -2.0], [1.5, 2.0]]);
    assert_eq!(m.scalar_i64("num_heads").unwrap(), 3);
    assert!(m.scalar_i64("a/bias").unwrap_err().to_string().contains("not an integer scalar"));
    assert!(m.tensor("nope", cpu, DType::F32).unwrap_err().to_string().contains("no variable named `nope`"));

    // An int8 weight without its scale cannot be dequantized; the raw values stay readable.
    let bare = model_bin(6, &[var("w", &[2], 1, vec![1, 2])], &[]);
    let m = Ct2Model::from_bytes(bare, Path::new("bare.bin")).unwrap();
    let err = m.weight("w", cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("bare.bin") && err.contains("without a `w_scale`"), "{err}");

    // Version 3 stores item sizes and element counts; version 1 has neither spec nor aliases.
    let v3 = model_bin(3, &[var("x", &[2], 0, f32s(&[0.5, 0.25]))], &[("y", "x")]);
    let m = Ct2Model::from_bytes(v3, Path::new("v3.bin")).unwrap();
    assert_eq!(m.tensor("y", cpu, DType::F32).unwrap().to_vec1::<f32>().unwrap(), [0.5, 0.25]);
    let v1 = model_bin(1, &[var("x", &[1], 2, vec![7, 0])], &[]);
    let m = Ct2Model::from_bytes(v1, Path::new("v1.bin")).unwrap();
    assert!(m.spec().is_none());
    assert_eq!(m.variable("x").unwrap().dtype, Ct2DType::I16);
}

#[test]
fn a_file_cut_at_any_byte_is_reported_as_truncated() {
    let whole = small();
    for cut in 0..whole.len() {
        match kind_of(whole[..cut].to_vec()) {
            Ct2ErrorKind::Truncated { offset, left, needed, .. } => {
                assert!(left < needed && offset as usize + left as usize == cut, "cut {cut}: offset {offset}");
            }
            other => panic!("cut at {cut}: {other}"),
        }
    }
    // Through a real file, the message names the file and the field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    std::fs::write(&path, &whole[..40]).unwrap();
    let msg = GraftError::from(Ct2Model::open(&path).unwrap_err()).to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("truncated"), "{msg}");
}

#[test]
fn huge_counts_and_shapes_are_refused_before_allocating() {
    // Four billion variables claimed by a 27-byte file.
    let mut bytes = model_bin(6, &[], &[]);
    let at = bytes.len() - 8;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let msg = kind_of(bytes).to_string();
    assert!(msg.contains("variable count") && msg.contains("4294967295 records"), "{msg}");
    // Four billion aliases.
    let mut bytes = model_bin(6, &[], &[]);
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(kind_of(bytes).to_string().contains("alias count"));

    // A shape whose byte count overflows 64 bits, and one that is merely larger than stored.
    let k = kind_of(model_bin(6, &[var("w", &[u32::MAX; 4], 4, vec![0; 8])], &[]));
    assert!(matches!(k, Ct2ErrorKind::SizeMismatch { expected: ExpectedBytes::Overflow, found: 8, .. }), "{k}");
    let k = kind_of(model_bin(6, &[var("w", &[1_000_000, 1_000_000], 0, vec![0; 4])], &[]));
    assert!(matches!(k, Ct2ErrorKind::SizeMismatch { expected: ExpectedBytes::Bytes(4_000_000_000_000), .. }), "{k}");
    // A consistent shape and byte count (1 GiB) that the file does not hold.
    let mut bytes = model_bin(6, &[var("w", &[1 << 30], 1, vec![])], &[]);
    let size_at = bytes.len() - 4 - 4;
    bytes[size_at..size_at + 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let msg = kind_of(bytes).to_string();
    assert!(msg.contains("variable `w` data needs 1073741824 bytes"), "{msg}");
}

#[test]
fn bad_versions_dtypes_strings_names_and_aliases_each_have_their_error() {
    let good = model_bin(6, &[], &[]);
    let with = |at: usize, b: &[u8]| {
        let mut v = good.clone();
        v[at..at + b.len()].copy_from_slice(b);
        v
    };
    for version in [0u32, 7, u32::from_le_bytes(*b"GGUF")] {
        let k = kind_of(with(0, &version.to_le_bytes()));
        assert!(matches!(k, Ct2ErrorKind::Version { found } if found == version), "{k}");
    }
    let f = || f32s(&[1.0]);
    let k = kind_of(model_bin(6, &[var("w", &[1], 6, vec![0; 4])], &[]));
    assert!(matches!(&k, Ct2ErrorKind::UnknownDType { name, code: 6 } if name == "w"), "{k}");
    // Before version 4 the item size stands for the dtype: 3 bytes is none.
    let mut v3 = model_bin(3, &[var("w", &[1], 0, f())], &[]);
    let item_at = v3.len() - 4 - 4 - 4 - 1;
    v3[item_at] = 3;
    let k = kind_of(v3);
    assert!(matches!(&k, Ct2ErrorKind::UnknownDType { name, code: 3 } if name == "w"), "{k}");

    let k = kind_of(model_bin(6, &[var("w", &[1], 0, f()), var("w", &[1], 0, f())], &[]));
    assert!(matches!(&k, Ct2ErrorKind::DuplicateName { name } if name == "w"), "{k}");
    let k = kind_of(model_bin(6, &[var("w", &[1], 0, f()), var("v", &[1], 0, f())], &[("v", "w")]));
    assert!(matches!(&k, Ct2ErrorKind::DuplicateName { name } if name == "v"), "{k}");
    let k = kind_of(model_bin(6, &[var("w", &[1], 0, f())], &[("tied", "missing")]));
    assert!(matches!(&k, Ct2ErrorKind::BadAlias { alias, target } if alias == "tied" && target == "missing"), "{k}");

    // Strings: zero length, no closing NUL, not UTF-8 (the spec name starts at offset 4).
    for (bytes, reason) in [
        (with(4, &[0, 0]), "empty"),
        (with(4 + 2 + 8, b"x"), "does not end in a NUL"),
        (with(6, &[0xff]), "not valid UTF-8"),
    ] {
        let k = kind_of(bytes);
        assert!(matches!(&k, Ct2ErrorKind::BadString { offset: 4, .. }) && k.to_string().contains(reason), "{k}");
    }

    let mut extra = good.clone();
    extra.extend_from_slice(b"more");
    assert!(matches!(kind_of(extra), Ct2ErrorKind::TrailingBytes { count: 4, .. }));
}

#[test]
fn a_folder_that_is_not_a_whisper_model_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("model.bin"), small()).unwrap();
    std::fs::write(d.join("config.json"), "{}").unwrap();
    std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
    let msg = WhisperFolder::open(d).unwrap_err().to_string();
    assert!(msg.contains("no vocabulary.txt"), "{msg}");
    std::fs::write(d.join("vocabulary.txt"), "a\n").unwrap();
    let msg = WhisperFolder::open(d).unwrap_err().to_string();
    assert!(msg.contains("model.bin") && msg.contains("has spec `TestSpec`, not `WhisperSpec`"), "{msg}");

    // The real model with a config holding a key CTranslate2's Whisper config does not have.
    let real = tiny_en();
    for file in ["model.bin", "tokenizer.json", "vocabulary.txt"] {
        std::fs::copy(real.join(file), d.join(file)).unwrap();
    }
    std::fs::write(d.join("config.json"), r#"{"lang_ids": [1], "num_mel_bins": 80}"#).unwrap();
    let msg = WhisperFolder::open(d).unwrap_err().to_string();
    assert!(msg.contains("config.json") && msg.contains("unknown field `num_mel_bins`"), "{msg}");
}
