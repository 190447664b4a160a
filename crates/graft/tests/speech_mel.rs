//! Whisper's audio front end against reference values (`scripts/speech-reference.py`, files in
//! `tests/golden/speech/`): the mel filter banks against librosa's, and the log-mel spectrogram
//! of real clips (our own sentences synthesised with espeak-ng in three languages) against
//! transformers' `WhisperFeatureExtractor`, read through graft's WAV reader; a clip at 22050 Hz
//! goes through graft's resampler.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use graft::speech::audio::{load_audio, read_wav, SAMPLE_RATE};
use graft::speech::mel::{content_frames, LogMel, MelFilterBank, N_FRAMES, N_SAMPLES};
use serde_json::Value;

/// Filter weights: both sides compute the same f64 formula; the reference is rounded to f32
/// (weights are below 0.03, so rounding is below 2e-9; measured: at most 2.3e-9).
const FILTER_TOL: f64 = 1e-6;

/// Log-mel values on the same samples: the reference stores the FFT in complex64 and the
/// result in f32; graft computes in f64 (measured: at most 1.2e-7, one f32 rounding step).
const LOG_MEL_TOL: f64 = 1e-4;

/// Log-mel of a clip resampled by graft (rubato's FFT resampler) against the same clip resampled
/// by scipy's polyphase filter: two different anti-aliasing filters, which roll off differently
/// near the 8 kHz Nyquist edge, and two ways of starting the signal (frame 0). Measured, in units
/// of the scaled log-mel (1.0 = 40 dB): mean |Δ| 1.7e-3 and max |Δ| 0.155 over all bins and
/// frames (the max in frame 0 and in the top bin, 7.4-8 kHz); max |Δ| 0.026 over frames 1.. and
/// mel bins 0..78 (filters below 7.4 kHz). Bounds set a few times above each.
const RESAMPLED_MEAN_TOL: f64 = 0.01;
const RESAMPLED_MAX_TOL: f64 = 0.4;
const RESAMPLED_INNER_TOL: f64 = 0.08;
/// Mel bins whose filters lie below 7.4 kHz (bin 78 peaks at 7.4 kHz).
const INNER_BINS: usize = 78;

fn dir() -> PathBuf {
    common::golden_dir().join("speech")
}

fn reference() -> HashMap<String, Tensor> {
    let path = dir().join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn clips() -> Vec<Value> {
    common::golden_json("speech/clips.json")["clips"].as_array().unwrap().clone()
}

/// The `[n_mels, n_frames]` row-major values of `m` restricted to frames `from..to`.
fn frames(m: &[f32], n_mels: usize, from: usize, to: usize) -> Vec<f32> {
    (0..n_mels).flat_map(|b| m[b * N_FRAMES + from..b * N_FRAMES + to].to_vec()).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn filter_banks_equal_librosa() {
    let refs = reference();
    for n in [80, 128] {
        let spans = refs[&format!("filters_{n}_spans")].to_vec2::<i64>().unwrap();
        let packed = values(&refs[&format!("filters_{n}_values")]);
        let mut dense = vec![0f64; n * 201];
        let mut at = 0;
        for (m, s) in spans.iter().enumerate() {
            for k in s[0] as usize..s[1] as usize {
                dense[m * 201 + k] = f64::from(packed[at]);
                at += 1;
            }
        }
        assert_eq!(at, packed.len());
        let bank = MelFilterBank::slaney(n, 16_000, 400).unwrap();
        let diff = common::max_abs_diff_f64(bank.weights(), &dense);
        eprintln!("{n}-bin filter bank: max |Δ| {diff:.2e}");
        assert!(diff <= FILTER_TOL, "{n} bins: max |Δ| {diff}");
        // Not vacuous: every filter has weight.
        assert!((0..n).all(|m| bank.weights()[m * 201..(m + 1) * 201].iter().any(|&w| w > 0.0)));
    }
}

#[test]
fn log_mel_of_real_clips_matches_whisper_feature_extractor() {
    let refs = reference();
    let lm80 = LogMel::new(80).unwrap();
    let lm128 = LogMel::new(128).unwrap();
    let mut checked = 0;
    for clip in clips().iter().filter(|c| c["sample_rate"] == 16_000) {
        let file = clip["file"].as_str().unwrap();
        let name = file.trim_end_matches(".wav");
        let wav = read_wav(&dir().join(file)).unwrap();
        assert_eq!((wav.sample_rate, wav.channels, wav.bits_per_sample), (16_000, 1, 16), "{file}");
        assert_eq!(wav.samples.len() as u64, clip["samples"].as_u64().unwrap(), "{file}");
        let content = content_frames(wav.samples.len());
        assert_eq!(content as u64, clip["content_frames"].as_u64().unwrap());
        let stored = clip["stored_frames"].as_u64().unwrap() as usize;

        let m = lm80.compute(&wav.samples).unwrap();
        let expected = values(&refs[&format!("{name}_logmel_80")]);
        let clip_diff = max_abs(&frames(&m, 80, 0, content), &expected_frames(&expected, stored, 0, content));
        let edge_diff = max_abs(&frames(&m, 80, content, stored), &expected_frames(&expected, stored, content, stored));
        // Deep in the padding every frame is the same: the clamped floor, as frame 2999 of the
        // reference.
        let last = values(&refs[&format!("{name}_last_80")]);
        let tail_diff = (stored..N_FRAMES).map(|t| max_abs(&frames(&m, 80, t, t + 1), &last)).fold(0.0, f64::max);
        eprintln!("{file}: max |Δ| {clip_diff:.2e} over {content} clip frames, {edge_diff:.2e} over the next {}, {tail_diff:.2e} over the rest", stored - content);
        for (what, d) in [("clip frames", clip_diff), ("first padded frames", edge_diff), ("padding", tail_diff)] {
            assert!(d <= LOG_MEL_TOL, "{file}: {what}: max |Δ| {d}");
        }
        // Not vacuous: speech spans a range of values (the log-mel is not flat).
        let spread =
            expected.iter().fold(f32::MIN, |a, &b| a.max(b)) - expected.iter().fold(f32::MAX, |a, &b| a.min(b));
        assert!(spread > 1.0, "{file}: the reference spans only {spread}");

        if name == "en" {
            let n128 = refs["en_logmel_128"].dims()[1];
            let m128 = lm128.compute(&wav.samples).unwrap();
            let d = max_abs(&frames(&m128, 128, 0, n128), &values(&refs["en_logmel_128"]));
            eprintln!("{file}: 128 bins, max |Δ| {d:.2e} over {n128} frames");
            assert!(d <= LOG_MEL_TOL, "128 bins: max |Δ| {d}");
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "three 16 kHz clips");
}

/// Frames `from..to` of a reference stored as `[80, stored]`.
fn expected_frames(r: &[f32], stored: usize, from: usize, to: usize) -> Vec<f32> {
    (0..80).flat_map(|b| r[b * stored + from..b * stored + to].to_vec()).collect()
}

#[test]
fn a_22050_hz_clip_is_resampled_close_to_a_polyphase_reference() {
    let clip = clips().into_iter().find(|c| c["sample_rate"] == 22_050).unwrap();
    let path = dir().join(clip["file"].as_str().unwrap());
    assert_eq!(read_wav(&path).unwrap().sample_rate, 22_050);
    let x = load_audio(&path).unwrap();
    assert_eq!(x.len() as u64, clip["resampled_samples"].as_u64().unwrap(), "ceil(n * 16000 / 22050)");
    let content = clip["content_frames"].as_u64().unwrap() as usize;
    let stored = clip["stored_frames"].as_u64().unwrap() as usize;
    let m = LogMel::new(80).unwrap().compute(&x).unwrap();
    let got = frames(&m, 80, 0, content);
    let expected = expected_frames(&values(&reference()["fr-22050_resampled_logmel_80"]), stored, 0, content);
    let mean = got.iter().zip(&expected).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>() / got.len() as f64;
    let max = max_abs(&got, &expected);
    let inner = (0..INNER_BINS)
        .map(|b| max_abs(&got[b * content + 1..(b + 1) * content], &expected[b * content + 1..(b + 1) * content]))
        .fold(0.0, f64::max);
    eprintln!(
        "resampled 22050 Hz clip over {content} frames: mean |Δ| {mean:.2e}, max |Δ| {max:.2e}; \
         {inner:.2e} over frames 1.. and bins below 7.4 kHz"
    );
    assert!(mean <= RESAMPLED_MEAN_TOL, "mean |Δ| {mean}");
    assert!(max <= RESAMPLED_MAX_TOL, "max |Δ| {max}");
    assert!(inner <= RESAMPLED_INNER_TOL, "max |Δ| {inner} below 7.4 kHz");
}

#[test]
fn the_window_is_30_seconds_and_the_tensor_lands_on_the_device() {
    let wav = read_wav(&dir().join("en.wav")).unwrap();
    let lm = LogMel::new(80).unwrap();
    // Audio past 30 s is cut off: the clip repeated beyond 30 s gives the first 30 s' log-mel.
    let long: Vec<f32> = wav.samples.iter().copied().cycle().take(N_SAMPLES + 3 * SAMPLE_RATE as usize).collect();
    assert_eq!(lm.compute(&long).unwrap(), lm.compute(&long[..N_SAMPLES]).unwrap());
    assert_ne!(lm.compute(&long).unwrap(), lm.compute(&wav.samples).unwrap());
    let t = lm.tensor(&wav.samples, &Device::Cpu, DType::BF16).unwrap();
    assert_eq!((t.dims(), t.dtype()), (&[80, N_FRAMES][..], DType::BF16));
    let back = values(&t.to_dtype(DType::F32).unwrap());
    let exact = lm.compute(&wav.samples).unwrap();
    assert!(max_abs(&back, &exact) < 0.02, "bf16 rounding only");
}
