//! Whisper's log-mel front end: 16 kHz mono samples -> a `[n_mels, 3000]` log-mel spectrogram
//! of one 30-second window, computed the way Whisper (and transformers'
//! `WhisperFeatureExtractor`) does:
//!
//! 1. pad with zeros or trim to 30 s ([`N_SAMPLES`] samples);
//! 2. STFT with a 400-point periodic Hann window, hop 160, the signal reflect-padded by 200
//!    samples at each end (`torch.stft(center=True)`): 3001 frames, of which the last is dropped;
//! 3. power spectrum |X|², then a Slaney-style mel filter bank ([`MelFilterBank::slaney`]: the
//!    bank of `librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)`, `htk=False`,
//!    `norm="slaney"`), 80 bins (128 for large-v3 style models);
//! 4. `log10(max(x, 1e-10))`, clamped from below at (its maximum − 8), then `(x + 4) / 4`.
//!
//! Everything is computed on the CPU in f64 and returned as f32 (or a candle tensor moved to the
//! requested device and dtype).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use realfft::{RealFftPlanner, RealToComplex};

use super::audio::SAMPLE_RATE;
use crate::{GraftError, Result};

/// FFT size (and window length) in samples: 25 ms at 16 kHz.
pub const N_FFT: usize = 400;
/// Hop between frames in samples: 10 ms at 16 kHz.
pub const HOP_LENGTH: usize = 160;
/// Frequency bins of one frame's power spectrum.
pub const N_FREQS: usize = N_FFT / 2 + 1;
/// Samples in one 30-second window.
pub const N_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Frames of one window's spectrogram (the STFT's 3001 frames less the last).
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Mel bins of most Whisper models (large-v3 style models use 128).
pub const N_MELS: usize = 80;

/// Floor under the mel power before the logarithm.
const POWER_FLOOR: f64 = 1e-10;
/// Dynamic range kept below the loudest value, in log10 units (80 dB).
const DYNAMIC_RANGE: f64 = 8.0;

/// The number of frames that hold some of `n_samples` samples of audio (the rest of the
/// 3000 frames of a window are padding): `ceil(min(n, N_SAMPLES) / 160)`.
pub fn content_frames(n_samples: usize) -> usize {
    n_samples.min(N_SAMPLES).div_ceil(HOP_LENGTH)
}

/// A bank of triangular mel filters over the bins of a one-sided power spectrum.
#[derive(Debug, Clone)]
pub struct MelFilterBank {
    n_mels: usize,
    n_freqs: usize,
    /// `[n_mels, n_freqs]`, row-major.
    weights: Vec<f64>,
    /// The first and one-past-last non-zero bin of each filter (the filters are narrow).
    spans: Vec<(usize, usize)>,
}

impl MelFilterBank {
    /// The Slaney-style bank of `librosa.filters.mel(sr, n_fft, n_mels)` with its defaults
    /// (`fmin=0`, `fmax=sr/2`, `htk=False`, `norm="slaney"`): filters whose edges are evenly
    /// spaced on the Slaney mel scale (linear below 1 kHz, logarithmic above), each scaled to
    /// unit area (2 / its width in Hz). Computed in f64; librosa returns the same in f32.
    pub fn slaney(n_mels: usize, sample_rate: u32, n_fft: usize) -> Result<Self> {
        let n_freqs = n_fft / 2 + 1;
        if sample_rate == 0 || n_fft < 2 {
            return Err(GraftError::Input(format!(
                "a mel filter bank needs a positive sample rate and an FFT of at least 2 points \
                 (got {sample_rate} Hz, n_fft {n_fft})"
            )));
        }
        if n_mels == 0 || n_mels > n_freqs {
            return Err(GraftError::Input(format!(
                "n_mels must be between 1 and {n_freqs} (the frequency bins of a {n_fft}-point FFT), not {n_mels}"
            )));
        }
        let sr = f64::from(sample_rate);
        let fft_freqs: Vec<f64> = (0..n_freqs).map(|k| k as f64 * sr / n_fft as f64).collect();
        let mel_freqs: Vec<f64> =
            linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2).into_iter().map(mel_to_hz).collect();
        let mut weights = vec![0.0; n_mels * n_freqs];
        let mut spans = Vec::with_capacity(n_mels);
        for m in 0..n_mels {
            let (left, centre, right) = (mel_freqs[m], mel_freqs[m + 1], mel_freqs[m + 2]);
            let enorm = 2.0 / (right - left);
            let row = &mut weights[m * n_freqs..(m + 1) * n_freqs];
            for (w, &f) in row.iter_mut().zip(&fft_freqs) {
                let lower = -(left - f) / (centre - left);
                let upper = (right - f) / (right - centre);
                *w = lower.min(upper).max(0.0) * enorm;
            }
            let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
            let end = row.iter().rposition(|&w| w > 0.0).map_or(first, |i| i + 1);
            spans.push((first, end));
        }
        Ok(MelFilterBank { n_mels, n_freqs, weights, spans })
    }

    /// Number of filters (mel bins).
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Number of frequency bins each filter spans (`n_fft / 2 + 1`).
    pub fn n_freqs(&self) -> usize {
        self.n_freqs
    }

    /// The weights, `[n_mels, n_freqs]` row-major.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Mel power of one frame: `out[m] = Σ_k weights[m, k] · power[k]`.
    fn apply(&self, power: &[f64], out: &mut [f64]) {
        for (m, (o, &(a, b))) in out.iter_mut().zip(&self.spans).enumerate() {
            let row = &self.weights[m * self.n_freqs..(m + 1) * self.n_freqs];
            *o = row[a..b].iter().zip(&power[a..b]).map(|(w, p)| w * p).sum();
        }
    }
}

/// Slaney's mel scale: linear (3 bins per 200 Hz) below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    if hz >= min_log_hz {
        min_log_hz / f_sp + (hz / min_log_hz).ln() / log_step()
    } else {
        hz / f_sp
    }
}

/// The inverse of [`hz_to_mel`].
fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    if mel >= min_log_mel {
        min_log_hz * (log_step() * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// The logarithmic part's step per mel: ln(6.4) / 27.
fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// `n` evenly spaced values from `start` to `stop` inclusive, as `numpy.linspace` computes them.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    (0..n).map(|i| if i + 1 == n { stop } else { start + i as f64 * step }).collect()
}

/// Whisper's log-mel front end for one 30-second window; build it once and reuse it.
pub struct LogMel {
    filters: MelFilterBank,
    /// The periodic Hann window, `0.5 − 0.5·cos(2πn / N_FFT)`.
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl LogMel {
    /// The front end with `n_mels` mel bins (80, or 128 for large-v3 style models).
    pub fn new(n_mels: usize) -> Result<Self> {
        let filters = MelFilterBank::slaney(n_mels, SAMPLE_RATE, N_FFT)?;
        let window =
            (0..N_FFT).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()).collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        Ok(LogMel { filters, window, fft })
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.filters.n_mels
    }

    /// The mel filter bank in use.
    pub fn filters(&self) -> &MelFilterBank {
        &self.filters
    }

    /// The log-mel spectrogram of 16 kHz mono `samples` (padded or trimmed to 30 s),
    /// `[n_mels, N_FRAMES]` row-major.
    pub fn compute(&self, samples: &[f32]) -> Result<Vec<f32>> {
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(GraftError::Input(format!("audio sample {i} is not a finite number")));
        }
        let padded = reflect_padded(samples);
        let n_mels = self.n_mels();
        let mut mel = vec![0.0f64; n_mels * N_FRAMES];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; N_FREQS];
        let mut column = vec![0.0f64; n_mels];
        for t in 0..N_FRAMES {
            let start = t * HOP_LENGTH;
            let span = &padded[start..start + N_FFT];
            for ((f, &x), &w) in frame.iter_mut().zip(span).zip(&self.window) {
                *f = x * w;
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .map_err(|e| GraftError::Input(format!("STFT frame {t}: {e}")))?;
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            self.filters.apply(&power, &mut column);
            for (m, &v) in column.iter().enumerate() {
                mel[m * N_FRAMES + t] = v.max(POWER_FLOOR).log10();
            }
        }
        let floor = mel.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)) - DYNAMIC_RANGE;
        Ok(mel.into_iter().map(|v| ((v.max(floor) + 4.0) / 4.0) as f32).collect())
    }

    /// [`LogMel::compute`] as a `[n_mels, N_FRAMES]` tensor on `device` in `dtype`.
    pub fn tensor(&self, samples: &[f32], device: &Device, dtype: DType) -> Result<Tensor> {
        let values = self.compute(samples)?;
        let t = Tensor::from_vec(values, (self.n_mels(), N_FRAMES), &Device::Cpu)?;
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

/// The samples padded with zeros (or trimmed) to [`N_SAMPLES`], then reflect-padded by
/// `N_FFT / 2` at each end as `torch.stft(center=True, pad_mode="reflect")` does.
fn reflect_padded(samples: &[f32]) -> Vec<f64> {
    let half = N_FFT / 2;
    let x = |i: usize| samples.get(i).map_or(0.0, |&v| f64::from(v));
    let mut out = Vec::with_capacity(N_SAMPLES + N_FFT);
    out.extend((1..=half).rev().map(x));
    out.extend((0..N_SAMPLES).map(x));
    out.extend((1..=half).map(|j| x(N_SAMPLES - 1 - j)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_has_its_corner_at_1_khz() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(6400.0) - 42.0).abs() < 1e-12, "6.4x above 1 kHz is 27 mels more");
        for hz in [0.0, 200.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
    }

    #[test]
    fn filters_are_unit_area_triangles_in_order() {
        let bank = MelFilterBank::slaney(80, 16_000, 400).unwrap();
        assert_eq!((bank.n_mels(), bank.n_freqs()), (80, 201));
        let mut last_peak = 0;
        for (m, &(a, b)) in bank.spans.iter().enumerate() {
            assert!(a < b, "filter {m} is empty");
            let row = &bank.weights[m * 201..(m + 1) * 201];
            let peak = (a..b).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
            assert!(peak >= last_peak, "filter {m} peaks before filter {}", m.max(1) - 1);
            last_peak = peak;
        }
        assert!(MelFilterBank::slaney(0, 16_000, 400).is_err());
        assert!(MelFilterBank::slaney(202, 16_000, 400).is_err());
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge() {
        let x: Vec<f32> = (1..=300).map(|v| v as f32).collect();
        let p = reflect_padded(&x);
        assert_eq!(p.len(), N_SAMPLES + N_FFT);
        assert_eq!(&p[195..203], &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0]);
        assert_eq!(p[0], 201.0);
        // The end of a short clip is followed by zeros, which the right edge reflects.
        assert!(p[N_SAMPLES + N_FFT - 1] == 0.0 && p[200 + 300] == 0.0);
    }

    #[test]
    fn silence_is_flat_and_a_tone_lights_its_band() {
        let lm = LogMel::new(N_MELS).unwrap();
        let silent = lm.compute(&[]).unwrap();
        assert_eq!(silent.len(), 80 * N_FRAMES);
        assert!(silent.iter().all(|&v| v == -1.5), "log10(1e-10) = -10 -> (-10 + 4) / 4");
        // A 1 kHz tone for one second: frame 50's loudest bin is the filter centred nearest 1 kHz
        // (mel 15 of 0..45.2 over 81 steps -> filter ~25), and frames past the clip sit at the floor.
        let tone: Vec<f32> =
            (0..16_000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin()).collect();
        let m = lm.compute(&tone).unwrap();
        let col = |t: usize| (0..80).map(|b| m[b * N_FRAMES + t]).collect::<Vec<f32>>();
        let c = col(50);
        let loudest = (0..80).max_by(|&i, &j| c[i].total_cmp(&c[j])).unwrap();
        assert!((25..=27).contains(&loudest), "1 kHz peaks in mel bin {loudest}");
        let top = m.iter().fold(f32::MIN, |a, &b| a.max(b));
        assert!(col(200).iter().all(|&v| (v - (top - 2.0)).abs() < 1e-6), "padding is clamped to max - 8");
        let t = lm.tensor(&tone, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(t.dims(), &[80, N_FRAMES]);
        assert_eq!(content_frames(tone.len()), 100);
        assert_eq!(content_frames(10 * N_SAMPLES), N_FRAMES);
    }
}
