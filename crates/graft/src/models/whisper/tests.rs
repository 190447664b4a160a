//! A tiny Whisper network written as a CTranslate2 `model.bin` in memory (width 8, 2 heads,
//! one block each side): the two decoding paths agree, inputs of the wrong size are refused, and
//! a variable of the wrong shape is an error naming it.

use super::{Pass, Whisper};
use crate::io::ctranslate2::whisper::{WhisperConfig, WhisperDims, WhisperFolder};
use crate::io::ctranslate2::Ct2Model;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

const D: usize = 8;
const FFN: usize = 16;
const MELS: usize = 3;
const VOCAB: usize = 11;
const AUDIO_CTX: usize = 5;
const TEXT_CTX: usize = 6;

/// `(name, shape, dtype code, bytes)` of one variable.
type Var = (String, Vec<usize>, u8, Vec<u8>);

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Pseudo-random f32 values in `[-scale, scale]` (+ `offset`), seeded by the variable's index.
fn floats(n: usize, seed: usize, scale: f32, offset: f32) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            ((2.0 * u - 1.0) * scale + offset).to_le_bytes()
        })
        .collect()
}

/// The variables of the tiny network; `swap` replaces the shape of the variable it names.
fn variables(swap: Option<(&str, Vec<usize>)>) -> Vec<Var> {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("encoder/conv1/weight".into(), vec![D, MELS, 3]),
        ("encoder/conv1/bias".into(), vec![D]),
        ("encoder/conv2/weight".into(), vec![D, D, 3]),
        ("encoder/conv2/bias".into(), vec![D]),
        ("encoder/position_encodings/encodings".into(), vec![AUDIO_CTX, D]),
        ("decoder/embeddings/weight".into(), vec![VOCAB, D]),
        ("decoder/position_encodings/encodings".into(), vec![TEXT_CTX, D]),
    ];
    let norm = |shapes: &mut Vec<(String, Vec<usize>)>, scope: String| {
        shapes.push((format!("{scope}/gamma"), vec![D]));
        shapes.push((format!("{scope}/beta"), vec![D]));
    };
    let linear = |shapes: &mut Vec<(String, Vec<usize>)>, scope: String, out: usize, inp: usize| {
        shapes.push((format!("{scope}/weight"), vec![out, inp]));
        shapes.push((format!("{scope}/bias"), vec![out]));
    };
    for side in ["encoder", "decoder"] {
        let l = format!("{side}/layer_0");
        norm(&mut shapes, format!("{side}/layer_norm"));
        norm(&mut shapes, format!("{l}/self_attention/layer_norm"));
        linear(&mut shapes, format!("{l}/self_attention/linear_0"), 3 * D, D);
        linear(&mut shapes, format!("{l}/self_attention/linear_1"), D, D);
        norm(&mut shapes, format!("{l}/ffn/layer_norm"));
        linear(&mut shapes, format!("{l}/ffn/linear_0"), FFN, D);
        linear(&mut shapes, format!("{l}/ffn/linear_1"), D, FFN);
    }
    norm(&mut shapes, "decoder/layer_0/attention/layer_norm".into());
    linear(&mut shapes, "decoder/layer_0/attention/linear_0".into(), D, D);
    linear(&mut shapes, "decoder/layer_0/attention/linear_1".into(), 2 * D, D);
    linear(&mut shapes, "decoder/layer_0/attention/linear_2".into(), D, D);
    let mut vars: Vec<Var> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let shape = match &swap {
                Some((n, s)) if *n == name => s.clone(),
                _ => shape,
            };
            let offset = if name.ends_with("gamma") { 1.0 } else { 0.0 };
            let bytes = floats(shape.iter().product(), i + 1, 0.5, offset);
            (name, shape, 0u8, bytes)
        })
        .collect();
    for side in ["encoder", "decoder"] {
        vars.push((format!("{side}/num_heads"), vec![], 2, 2i16.to_le_bytes().to_vec()));
    }
    vars
}

/// A version-6 `WhisperSpec` model.bin holding `vars`, with the tied projection as an alias.
fn model_bin(vars: &[Var]) -> Vec<u8> {
    let mut out = 6u32.to_le_bytes().to_vec();
    put_str(&mut out, "WhisperSpec");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, shape, code, bytes) in vars {
        put_str(&mut out, name);
        out.push(shape.len() as u8);
        shape.iter().for_each(|&d| out.extend_from_slice(&(d as u32).to_le_bytes()));
        out.push(*code);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut out, "decoder/projection/weight");
    put_str(&mut out, "decoder/embeddings/weight");
    out
}

/// The tiny network as a folder (the files beside model.bin are not read here).
fn folder(swap: Option<(&str, Vec<usize>)>) -> crate::Result<WhisperFolder> {
    let model = Ct2Model::from_bytes(model_bin(&variables(swap)), Path::new("tiny/model.bin"))?;
    let dims = WhisperDims::of(&model)?;
    Ok(WhisperFolder {
        dir: PathBuf::from("tiny"),
        model,
        config: WhisperConfig {
            suppress_ids: vec![],
            suppress_ids_begin: vec![],
            lang_ids: vec![],
            alignment_heads: vec![],
        },
        dims,
        tokenizer_json: PathBuf::from("tiny/tokenizer.json"),
        vocabulary: PathBuf::from("tiny/vocabulary.txt"),
    })
}

fn tiny() -> Whisper {
    Whisper::from_folder(&folder(None).unwrap(), &Device::Cpu, DType::F32).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn sizes_and_projection_names_come_from_the_file() {
    let m = tiny();
    assert_eq!((m.dims.d_model, m.dims.encoder_layers, m.dims.decoder_heads), (D, 1, 2));
    let names = m.linear_names();
    assert_eq!(names.len(), 6 + 10);
    for n in ["encoder.layers.0.self_attn.k_proj", "decoder.layers.0.encoder_attn.v_proj", "decoder.layers.0.fc2"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
}

#[test]
fn cached_decoding_equals_the_training_path_for_a_batch() {
    let m = tiny();
    let mel = Tensor::randn(0f32, 1.0, (2, MELS, 2 * AUDIO_CTX), &Device::Cpu).unwrap();
    let audio = m.encode(&mel, Pass::Infer).unwrap();
    assert_eq!(audio.dims(), [2, AUDIO_CTX, D]);
    assert!(max_diff(&audio, &m.encode(&mel, Pass::Train).unwrap()) < 1e-5);
    let tokens = Tensor::new(&[[1u32, 4, 2, 9, 0, 3], [5, 5, 7, 1, 2, 10]], &Device::Cpu).unwrap();
    let train = m.decode_train(&tokens, &audio).unwrap();
    assert_eq!(train.dims(), [2, TEXT_CTX, VOCAB]);
    let mut cache = m.new_cache(&audio).unwrap();
    // Two tokens, then three after them (a causal mask with an offset), then one.
    let parts: Vec<Tensor> = [(0, 2), (2, 3), (5, 1)]
        .iter()
        .map(|&(at, n)| m.decode_step(&tokens.narrow(1, at, n).unwrap(), &mut cache).unwrap())
        .collect();
    assert_eq!(cache.len(), TEXT_CTX);
    assert!(max_diff(&train, &Tensor::cat(&parts, 1).unwrap()) < 1e-5);
    // A token past the decoder's positions is refused, not wrapped around.
    let err = m.decode_step(&tokens.narrow(1, 0, 1).unwrap(), &mut cache).unwrap_err().to_string();
    assert!(err.contains("6 positions"), "{err}");
}

#[test]
fn inputs_of_the_wrong_size_are_refused() {
    let m = tiny();
    for dims in [(1, MELS + 1, 2 * AUDIO_CTX), (1, MELS, 2 * AUDIO_CTX + 2), (1, MELS, 0)] {
        let mel = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
        let err = m.encode(&mel, Pass::Infer).unwrap_err().to_string();
        assert!(err.contains("log-mel frames"), "{dims:?}: {err}");
    }
}

#[test]
fn a_variable_of_the_wrong_shape_is_named() {
    let f = folder(Some(("decoder/layer_0/ffn/linear_1/weight", vec![FFN, D]))).unwrap();
    let err = Whisper::from_folder(&f, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("decoder/layer_0/ffn/linear_1/weight") && err.contains("[16, 8]"), "{err}");
    let f = folder(Some(("encoder/layer_0/self_attention/linear_0/weight", vec![2 * D, D]))).unwrap();
    let err = Whisper::from_folder(&f, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("encoder/layer_0/self_attention/linear_0/weight"), "{err}");
}
