//! Audio in: WAV files (the `hound` crate) decoded to mono samples in [-1, 1], and resampling
//! to the 16 kHz that speech models take (`rubato`'s synchronous FFT resampler). Out:
//! [`write_wav16`] writes mono 16-bit PCM (the synthetic speech data).
//!
//! Accepted: integer PCM of 8, 16, 24 or 32 bits and 32-bit float, any number of channels
//! (averaged to mono), sample rates from [`MIN_SAMPLE_RATE`] to [`MAX_SAMPLE_RATE`]. Everything
//! else — a file that is not WAV, a truncated data chunk, another encoding, zero channels, a
//! rate out of range, no samples, a sample that is not finite — is a [`GraftError::Audio`]
//! naming the file. Memory grows with the samples actually present, never with a length a
//! header claims.

use std::io::Read;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::{GraftError, Result};

/// The sample rate speech models take (Whisper: 16 kHz).
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest sample rate accepted, in Hz (below it there is no speech band left to keep).
pub const MIN_SAMPLE_RATE: u32 = 1_000;

/// Highest sample rate accepted, in Hz (this bounds the resampler's FFT sizes).
pub const MAX_SAMPLE_RATE: u32 = 384_000;

/// Frames the resampler processes per chunk (a hint: rubato rounds it to fit the ratio).
const RESAMPLE_CHUNK: usize = 1024;

/// A decoded WAV file, mixed down to one channel, at its own sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Mono samples in [-1, 1] (integer PCM divided by 2^(bits-1); float as stored).
    pub samples: Vec<f32>,
    /// Samples per second of `samples`.
    pub sample_rate: u32,
    /// How many channels the file had before they were averaged.
    pub channels: u16,
    /// Bits per stored sample (8, 16, 24 or 32).
    pub bits_per_sample: u16,
    /// Whether the file stored 32-bit floats rather than integers.
    pub float: bool,
}

impl Wav {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate)
    }
}

/// Reads the WAV file at `path` and mixes it down to mono, keeping its sample rate.
pub fn read_wav(path: &Path) -> Result<Wav> {
    let file = std::fs::File::open(path).map_err(|e| GraftError::io(path, e))?;
    decode_wav(std::io::BufReader::new(file), path)
}

/// Reads the WAV file at `path` as mono 16 kHz samples: what a speech model takes.
pub fn load_audio(path: &Path) -> Result<Vec<f32>> {
    let wav = read_wav(path)?;
    resample(&wav.samples, wav.sample_rate, SAMPLE_RATE).map_err(|e| match e {
        GraftError::Input(reason) => audio_error(path, reason),
        other => other,
    })
}

/// Decodes WAV bytes from `reader`; `path` is only used in error messages.
pub fn decode_wav(reader: impl Read, path: &Path) -> Result<Wav> {
    let fail = |reason: String| audio_error(path, reason);
    let mut wav = hound::WavReader::new(reader).map_err(|e| fail(header_problem(e)))?;
    let spec = wav.spec();
    if spec.channels == 0 {
        return Err(fail("the file has zero channels".into()));
    }
    check_rate(spec.sample_rate).map_err(fail)?;
    let float = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 8 | 16 | 24 | 32) => false,
        (hound::SampleFormat::Float, 32) => true,
        (format, bits) => {
            return Err(fail(format!(
                "{bits}-bit {} samples are not supported (integer PCM of 8, 16, 24 or 32 bits, \
                 or 32-bit float)",
                if format == hound::SampleFormat::Int { "integer" } else { "float" }
            )))
        }
    };
    let declared = wav.len() as usize;
    let channels = usize::from(spec.channels);
    let mut interleaved = Vec::new();
    let mut push = |i: usize, v: std::result::Result<f32, hound::Error>| -> Result<()> {
        let v = v.map_err(|e| fail(sample_problem(e, i, declared)))?;
        if !v.is_finite() {
            return Err(fail(format!("sample {i} is not a finite number ({v})")));
        }
        interleaved.push(v);
        Ok(())
    };
    if float {
        for (i, v) in wav.samples::<f32>().enumerate() {
            push(i, v)?;
        }
    } else {
        let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1));
        for (i, v) in wav.samples::<i32>().enumerate() {
            push(i, v.map(|x| (f64::from(x) * scale) as f32))?;
        }
    }
    if interleaved.is_empty() {
        return Err(fail("the file holds no audio (its data chunk is empty)".into()));
    }
    Ok(Wav {
        samples: if channels == 1 { interleaved } else { mix_to_mono(&interleaved, channels) },
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        float,
    })
}

/// Averages interleaved frames of `channels` samples into one channel.
pub fn mix_to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| (frame.iter().map(|&v| f64::from(v)).sum::<f64>() / channels as f64) as f32)
        .collect()
}

/// Resamples mono `samples` from `from` Hz to `to` Hz with a band-limited FFT resampler; the
/// result has `ceil(len * to / from)` samples, aligned with the input (the resampler's delay is
/// trimmed). Equal rates return the samples unchanged.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    check_rate(from).map_err(|r| GraftError::Input(format!("resampling from {from} Hz: {r}")))?;
    check_rate(to).map_err(|r| GraftError::Input(format!("resampling to {to} Hz: {r}")))?;
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let resampler_error = |what: String| GraftError::Input(format!("resampling {from} Hz -> {to} Hz: {what}"));
    let mut resampler = Fft::<f64>::new(from as usize, to as usize, RESAMPLE_CHUNK, 1, FixedSync::Both)
        .map_err(|e| resampler_error(e.to_string()))?;
    let input: Vec<f64> = samples.iter().map(|&v| f64::from(v)).collect();
    let adapter = InterleavedSlice::new(&input[..], 1, input.len()).map_err(|e| resampler_error(e.to_string()))?;
    let out = resampler.process_all(&adapter, input.len(), None).map_err(|e| resampler_error(e.to_string()))?;
    Ok(out.take_data().into_iter().map(|v| v as f32).collect())
}

/// Writes mono `samples` in [-1, 1] as a 16-bit PCM WAV file at `sample_rate` (values outside
/// the range are clipped).
pub fn write_wav16(path: &Path, samples: &[f32], sample_rate: u32) -> Result<()> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let fail = |e: hound::Error| match e {
        hound::Error::IoError(io) => GraftError::io(path, io),
        other => audio_error(path, format!("cannot write: {other}")),
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(fail)?;
    for &v in samples {
        let q = (f64::from(v) * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        w.write_sample(q).map_err(fail)?;
    }
    w.finalize().map_err(fail)
}

/// Checks that a sample rate is within the accepted range.
fn check_rate(rate: u32) -> std::result::Result<(), String> {
    if rate == 0 {
        return Err("the sample rate is 0 Hz".into());
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(format!(
            "the sample rate {rate} Hz is outside the supported {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
        ));
    }
    Ok(())
}

/// An audio error for `path`.
fn audio_error(path: &Path, reason: String) -> GraftError {
    GraftError::Audio { path: path.to_path_buf(), reason }
}

/// What is wrong with a WAV header, in words.
fn header_problem(e: hound::Error) -> String {
    match e {
        hound::Error::IoError(io) if is_short_read(&io) => "not a complete WAV file (it ends inside the header)".into(),
        hound::Error::IoError(io) => format!("cannot read it: {io}"),
        hound::Error::FormatError("no RIFF tag found" | "no WAVE tag found") => {
            "not a WAV file (no RIFF/WAVE header)".into()
        }
        hound::Error::FormatError(what) => format!("malformed WAV header: {what}"),
        hound::Error::Unsupported => {
            "unsupported WAV encoding (only PCM integer and IEEE float samples are read)".into()
        }
        other => format!("malformed WAV file: {other}"),
    }
}

/// Whether a read failed because the file ended (hound reports that as an `Other` error with
/// its own message, or as `UnexpectedEof`).
fn is_short_read(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::UnexpectedEof || io.to_string().contains("Failed to read enough bytes")
}

/// What went wrong reading sample `i` of the `declared` ones, in words.
fn sample_problem(e: hound::Error, i: usize, declared: usize) -> String {
    match e {
        hound::Error::IoError(io) if is_short_read(&io) => {
            format!("truncated: the data chunk declares {declared} samples but the file ends after {i}")
        }
        hound::Error::IoError(io) => format!("cannot read sample {i}: {io}"),
        hound::Error::Unsupported | hound::Error::TooWide => {
            "unsupported sample layout (bits per sample do not fit the block alignment)".into()
        }
        other => format!("cannot decode sample {i}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `samples` (interleaved) as a WAV file of the given spec into `dir`.
    fn write_wav(dir: &Path, name: &str, spec: hound::WavSpec, samples: &[f32]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for &v in samples {
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => w.write_sample(v).unwrap(),
                (_, bits) => {
                    let full = f64::from(1u32 << (bits - 1));
                    let q = (f64::from(v) * full).round().clamp(-full, full - 1.0) as i32;
                    w.write_sample(q).unwrap()
                }
            }
        }
        w.finalize().unwrap();
        path
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        let sample_format = if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int };
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format }
    }

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    /// Frequency of the strongest bin of the magnitude spectrum (a plain DFT scan over 1 Hz
    /// steps between `lo` and `hi`, Hann-windowed).
    fn peak_frequency(x: &[f32], rate: u32, lo: usize, hi: usize) -> f64 {
        let n = x.len();
        let w: Vec<f64> = (0..n)
            .map(|i| f64::from(x[i]) * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()))
            .collect();
        let power = |f: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in w.iter().enumerate() {
                let ph = 2.0 * std::f64::consts::PI * f * i as f64 / f64::from(rate);
                re += v * ph.cos();
                im -= v * ph.sin();
            }
            re * re + im * im
        };
        let mut best = (lo as f64, 0.0);
        for f in lo..=hi {
            let p = power(f as f64);
            if p > best.1 {
                best = (f as f64, p);
            }
        }
        best.0
    }

    #[test]
    fn resampled_sine_keeps_its_frequency_and_length() {
        // 440 Hz and 3 kHz tones at 22.05, 44.1 and 8 kHz, to 16 kHz: the spectrum's peak stays
        // within 2 Hz (the scan's step is 1 Hz; 0.5 s gives 2 Hz bins before windowing) and the
        // length is ceil(n * 16000 / rate).
        for (rate, freq) in [(22_050, 440.0), (44_100, 3_000.0), (8_000, 440.0), (48_000, 3_000.0)] {
            let n = rate as usize / 2;
            let out = resample(&sine(freq, rate, n), rate, SAMPLE_RATE).unwrap();
            let expected = (n as u64 * 16_000).div_ceil(u64::from(rate)) as usize;
            assert_eq!(out.len(), expected, "{rate} Hz");
            let f = freq as usize;
            let peak = peak_frequency(&out, SAMPLE_RATE, f - 50, f + 50);
            assert!((peak - freq).abs() <= 2.0, "{rate} Hz: {freq} Hz tone peaks at {peak} Hz");
            // The amplitude is kept away from the edges (the resampler is band-limited, not lossy).
            let mid = &out[out.len() / 4..3 * out.len() / 4];
            let amp = mid.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((amp - 0.5).abs() < 0.01, "{rate} Hz: amplitude {amp}");
        }
    }

    #[test]
    fn a_tone_above_the_new_nyquist_is_removed() {
        // 7.5 kHz at 44.1 kHz is below 8 kHz and kept; 11 kHz would alias to 5 kHz if the
        // resampler did not filter it, so almost nothing of it may remain.
        let rate = 44_100;
        let out = resample(&sine(11_000.0, rate, rate as usize / 2), rate, SAMPLE_RATE).unwrap();
        let rms = (out.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / out.len() as f64).sqrt();
        assert!(rms < 0.01, "an 11 kHz tone leaves rms {rms} after resampling to 16 kHz");
    }

    #[test]
    fn equal_rates_and_bad_rates() {
        let x = sine(440.0, SAMPLE_RATE, 1000);
        assert_eq!(resample(&x, SAMPLE_RATE, SAMPLE_RATE).unwrap(), x);
        for bad in [0, 999, MAX_SAMPLE_RATE + 1] {
            let e = resample(&x, bad, SAMPLE_RATE).unwrap_err().to_string();
            assert!(e.contains("sample rate"), "{e}");
        }
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        // Left 0.5, right -0.25 (exact in 16 bits) -> 0.125; then a frame of (1/2^15, 3/2^15).
        let frames = [0.5f32, -0.25, 1.0 / 32768.0, 3.0 / 32768.0];
        let path = write_wav(dir.path(), "stereo.wav", spec(2, 16_000, 16, false), &frames);
        let wav = read_wav(&path).unwrap();
        assert_eq!(wav.channels, 2);
        assert_eq!(wav.samples, vec![0.125, 2.0 / 32768.0]);
        let five = [0.1f32, 0.2, 0.3, 0.4, 0.5];
        let path = write_wav(dir.path(), "five.wav", spec(5, 16_000, 32, true), &five);
        let wav = read_wav(&path).unwrap();
        assert!(wav.float && wav.channels == 5);
        assert!((wav.samples[0] - 0.3).abs() < 1e-7, "{:?}", wav.samples);
    }

    #[test]
    fn every_sample_format_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let x = sine(440.0, 16_000, 400);
        for (bits, float, tol) in
            [(8, false, 1.0 / 128.0), (16, false, 1.0 / 32768.0), (24, false, 1e-6), (32, false, 1e-7), (32, true, 0.0)]
        {
            let path = write_wav(dir.path(), &format!("{bits}{float}.wav"), spec(1, 16_000, bits, float), &x);
            let wav = read_wav(&path).unwrap();
            assert_eq!(wav.bits_per_sample, bits);
            assert_eq!(wav.samples.len(), x.len());
            let err = wav.samples.iter().zip(&x).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= tol, "{bits}-bit float={float}: max error {err}");
        }
    }

    #[test]
    fn written_16_bit_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let x = [0.0f32, 0.5, -0.25, 1.5, -2.0, 1.0 / 32768.0];
        write_wav16(&path, &x, 16_000).unwrap();
        let wav = read_wav(&path).unwrap();
        assert_eq!((wav.sample_rate, wav.channels, wav.bits_per_sample, wav.float), (16_000, 1, 16, false));
        assert_eq!(
            wav.samples,
            vec![0.0, 0.5, -0.25, 32767.0 / 32768.0, -1.0, 1.0 / 32768.0],
            "out-of-range values clip"
        );
        assert!(write_wav16(&dir.path().join("no/such/dir.wav"), &x, 16_000).is_err());
    }

    #[test]
    fn a_file_at_another_rate_is_loaded_at_16_khz() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_wav(dir.path(), "22k.wav", spec(1, 22_050, 16, false), &sine(440.0, 22_050, 22_050));
        let x = load_audio(&path).unwrap();
        assert_eq!(x.len(), 16_000);
    }
}
