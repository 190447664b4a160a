#!/usr/bin/env python3
"""Reference values for graft's Whisper audio front end (crates/graft/tests/speech_mel.rs).

Writes into OUT (tests/golden/speech):

- short clips of our own sentences synthesised with espeak-ng (a different voice and language
  each): `en.wav`, `de.wav`, `es.wav` as 16 kHz 16-bit mono (espeak's 22050 Hz output resampled
  here with scipy's polyphase filter, `resample_poly(x, 320, 441)`, then rounded to 16 bits),
  and `fr-22050.wav` kept at espeak's native 22050 Hz, so graft's reader has to resample it;
- `reference.safetensors` (float32):
  - `filters_80`, `filters_128`: `librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)` (htk=False,
    norm="slaney"), `[N, 201]`, stored sparse to keep the file small: `filters_N_spans` (int64
    `[N, 2]`, each filter's first and one-past-last non-zero bin) and `filters_N_values` (the
    values inside the spans, row after row; every weight outside is 0); the script checks that
    transformers' bank agrees within 1e-7;
  - `<clip>_logmel_80`: `WhisperFeatureExtractor(feature_size=80)` on the clip's 16-bit samples
    / 32768 (padded to 30 s as the extractor does), frames `0 .. content_frames + 8` of the
    `[80, 3000]` result, where content_frames = ceil(samples / 160): the clip and the first
    padded frames; `<clip>_last_80`: frame 2999 (deep in the padding), `[80]`;
  - `en_logmel_128`: the same with `feature_size=128`, first 64 frames;
  - `fr-22050_resampled_logmel_80`: the 80-bin log-mel of `fr-22050.wav` after the polyphase
    resampling to 16 kHz in float (not rounded), content frames + 8: the reference for graft's
    own resampler, which differs from scipy's filter (the test's tolerance is looser);
- `clips.json`: per clip its file, voice, speed, pitch, sentence, sample rate, sample count,
  content_frames and stored frames; and the tool versions.

The log-mel values come from transformers' numpy path (torch is not installed, so
`WhisperFeatureExtractor` uses `_np_extract_fbank_features`: periodic Hann window, reflect
padding, power spectrum, log10 with the 1e-10 floor, max - 8 clamp, (x + 4) / 4, last frame
dropped).

Made with: Python 3.11, numpy 2.4.6, scipy 1.17.1, transformers 5.25.0, librosa 0.11.0,
safetensors 0.8.0 (pip, in a virtual environment), and espeak-ng 1.51 (Debian package
`espeak-ng`). Needed only to run this script, never by graft. Example:

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy transformers librosa
  /tmp/venv/bin/python scripts/speech-reference.py --out tests/golden/speech
"""

import argparse
import json
import math
import os
import subprocess
import tempfile
import wave

import librosa
import numpy as np
import safetensors.numpy
import scipy
import scipy.signal
import transformers
from transformers import WhisperFeatureExtractor

# name, espeak-ng voice, words per minute, pitch (0-99), sentence (written for these fixtures).
CLIPS = [
    ("en", "en-us", 185, 50, "Green kites drift over the harbour."),
    ("de", "de", 175, 35, "Der Hund schläft am warmen Ofen."),
    ("es", "es", 180, 65, "Mañana llueve en las montañas."),
]
# Kept at espeak-ng's native rate to exercise graft's resampler.
NATIVE = ("fr-22050", "fr-fr", 185, 55, "Le chat dort sous la table.")

HOP = 160
EXTRA_FRAMES = 8
FRAMES_128 = 64


def synthesise(voice, speed, pitch, text):
    """espeak-ng's output: int16 samples and their rate (22050 Hz)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text], check=True
        )
        return read_wav(path)


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x, rate


def write_wav(path, samples, rate):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def to_16k(x, rate):
    """float64 polyphase resampling of int16 samples (scaled to [-1, 1]) to 16 kHz."""
    g = math.gcd(16000, rate)
    return scipy.signal.resample_poly(x.astype(np.float64) / 32768.0, 16000 // g, rate // g)


def log_mel(fe, samples_f32):
    return fe(samples_f32, sampling_rate=16000, return_tensors="np").input_features[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (tests/golden/speech)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tensors = {}
    for n in (80, 128):
        lib = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n, htk=False, norm="slaney")
        hf = WhisperFeatureExtractor(feature_size=n).mel_filters.T
        assert lib.shape == (n, 201) and np.abs(lib - hf).max() < 1e-7, n
        lib = lib.astype(np.float32)
        spans, values = [], []
        for row in lib:
            nz = np.nonzero(row)[0]
            a, b = int(nz[0]), int(nz[-1]) + 1
            spans.append((a, b))
            values.append(row[a:b])
        tensors[f"filters_{n}_spans"] = np.array(spans, dtype=np.int64)
        tensors[f"filters_{n}_values"] = np.concatenate(values).astype(np.float32)

    fe80, fe128 = WhisperFeatureExtractor(feature_size=80), WhisperFeatureExtractor(feature_size=128)
    manifest = []
    for name, voice, speed, pitch, text in CLIPS:
        raw, rate = synthesise(voice, speed, pitch, text)
        pcm = np.clip(np.round(to_16k(raw, rate) * 32768.0), -32768, 32767).astype(np.int16)
        write_wav(os.path.join(args.out, f"{name}.wav"), pcm, 16000)
        x = pcm.astype(np.float32) / 32768.0
        content = math.ceil(len(x) / HOP)
        feats = log_mel(fe80, x)
        tensors[f"{name}_logmel_80"] = np.ascontiguousarray(feats[:, : content + EXTRA_FRAMES], dtype=np.float32)
        tensors[f"{name}_last_80"] = np.ascontiguousarray(feats[:, -1], dtype=np.float32)
        if name == "en":
            tensors["en_logmel_128"] = np.ascontiguousarray(log_mel(fe128, x)[:, :FRAMES_128], dtype=np.float32)
        manifest.append(
            dict(file=f"{name}.wav", voice=voice, speed=speed, pitch=pitch, text=text, sample_rate=16000,
                 samples=len(x), content_frames=content, stored_frames=content + EXTRA_FRAMES)
        )

    name, voice, speed, pitch, text = NATIVE
    raw, rate = synthesise(voice, speed, pitch, text)
    write_wav(os.path.join(args.out, f"{name}.wav"), raw, rate)
    x16 = to_16k(raw, rate).astype(np.float32)
    content = math.ceil(len(x16) / HOP)
    tensors[f"{name}_resampled_logmel_80"] = np.ascontiguousarray(
        log_mel(fe80, x16)[:, : content + EXTRA_FRAMES], dtype=np.float32
    )
    manifest.append(
        dict(file=f"{name}.wav", voice=voice, speed=speed, pitch=pitch, text=text, sample_rate=rate,
             samples=len(raw), resampled_samples=len(x16), content_frames=content,
             stored_frames=content + EXTRA_FRAMES)
    )

    safetensors.numpy.save_file(tensors, os.path.join(args.out, "reference.safetensors"))
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    espeak = espeak.split("Data at")[0].strip()  # the version, without the data folder's path
    versions = dict(numpy=np.__version__, scipy=scipy.__version__, transformers=transformers.__version__,
                    librosa=librosa.__version__, espeak_ng=espeak)
    with open(os.path.join(args.out, "clips.json"), "w") as f:
        json.dump(dict(versions=versions, extra_frames=EXTRA_FRAMES, frames_128=FRAMES_128, clips=manifest), f,
                  indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
