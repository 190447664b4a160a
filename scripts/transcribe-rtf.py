#!/usr/bin/env python3
"""Real-time factor of `graft transcribe` beside CTranslate2 on the same clips and CPU threads.

For each model (NAME=FOLDER, a CTranslate2 Whisper folder such as graft's asset folders
`whisper-tiny-en` and `whisper-base`) and each decoding (beam search with 5 beams, greedy):

- graft: one `graft transcribe --model FOLDER --json --beam-size B CLIPS...` run with
  RAYON_NUM_THREADS=THREADS; the processing time of a clip is its `decode_s` (reading and
  resampling the file, log-mel, encoder, language detection, decoding; not the model load);
- CTranslate2 (`ctranslate2.models.Whisper`, intra_threads=THREADS, for each compute type
  given): per clip, reading the file, transformers' `WhisperFeatureExtractor` log-mel, `encode`,
  `detect_language` on the encoder output (multilingual models), and `generate` on it
  (beam_size B, max_length 448, suppress_blank, suppress_tokens=[-1], without timestamps),
  30-second windows as graft cuts them.

Neither engine is told the language: a multilingual model detects it, an English-only model
gets English clips only. The first clip is decoded once before timing (warm-up, both engines).
The table gives, per model, decoding and engine: the clips, their audio seconds, the summed
processing seconds, RTF (processing / audio seconds) and on how many clips the tokens equal
graft's. The CPU model and flags come from /proc/cpuinfo.

Clips: the committed tests/golden/speech/{en,de,es}.wav and, with --speech-dir, the --long
longest clips of a `graft data build speech` folder (their language from its manifests).

Made with: Python 3.11, ctranslate2 4.8.5, numpy 2.4.6, transformers 5.25.0 (pip, in a virtual
environment); needed only for this measurement, never by graft. Example:

  cargo build --release -p graft-cli
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install ctranslate2 numpy transformers
  /tmp/venv/bin/python scripts/transcribe-rtf.py --graft target/release/graft \\
      --model tiny-en=$HOME/.cache/graft/models/whisper-tiny-en \\
      --model base=$HOME/.cache/graft/models/whisper-base --speech-dir data/speech --long 4
"""

import argparse
import glob
import json
import os
import subprocess
import time
import wave

import ctranslate2
import numpy as np
from transformers import WhisperFeatureExtractor

SAMPLE_RATE = 16000
WINDOW = 30 * SAMPLE_RATE
MAX_LENGTH = 448


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == SAMPLE_RATE, path
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.astype(np.float32) / 32768.0


def cpu_info():
    model, flags = "unknown", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    simd = [f for f in flags if f.startswith(("avx", "fma", "sse4", "f16c", "amx"))]
    return model, os.cpu_count(), simd


def clips(args):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "speech")
    out = [(os.path.normpath(os.path.join(root, f"{c}.wav")), c) for c in ("en", "de", "es")]
    if args.speech_dir:
        rows = []
        for manifest in sorted(glob.glob(os.path.join(args.speech_dir, "*.jsonl"))):
            with open(manifest) as f:
                rows += [json.loads(line) for line in f]
        rows.sort(key=lambda r: (-r["duration_s"], r["audio"]))
        out += [(os.path.join(args.speech_dir, r["audio"]), r["language"]) for r in rows[: args.long]]
    return out


def run_graft(binary, folder, paths, beam, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [binary, "transcribe", "--model", folder, "--json", "--beam-size", str(beam), paths[0], *paths]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    return rows[1:]  # the first is the warm-up


def run_ct2(model, fe, tokenizer_ids, path, beam):
    t0 = time.perf_counter()
    x = read_wav(path)
    tokens = []
    windows = [x[i : i + WINDOW] for i in range(0, max(len(x), 1), WINDOW)]
    language = None
    for w in windows:
        mel = fe(w, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features.astype(np.float32)
        enc = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=False)
        if model.is_multilingual:
            if language is None:
                language = model.detect_language(enc)[0][0][0]
            prompt = ["<|startoftranscript|>", language, "<|transcribe|>", "<|notimestamps|>"]
        else:
            prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
        r = model.generate(
            enc,
            [[tokenizer_ids[t] for t in prompt]],
            beam_size=beam,
            max_length=MAX_LENGTH,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens += r.sequences_ids[0]
    return time.perf_counter() - t0, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graft", default="target/release/graft", help="the graft binary (release build)")
    ap.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a CTranslate2 Whisper model")
    ap.add_argument("--speech-dir", help="a `graft data build speech` folder for longer clips")
    ap.add_argument("--long", type=int, default=4, help="how many of its longest clips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compute-types", default="float32,int8", help="CTranslate2 compute types")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()

    model_name, cores, simd = cpu_info()
    print(f"CPU: {model_name}, {cores} logical cores; SIMD flags: {' '.join(simd)}")
    print(f"threads: {args.threads}; ctranslate2 {ctranslate2.__version__}")
    all_clips = clips(args)
    fe = WhisperFeatureExtractor(feature_size=80)
    rows = []
    for spec in args.model:
        name, folder = spec.split("=", 1)
        with open(os.path.join(folder, "vocabulary.txt")) as f:
            vocab = {t: i for i, t in enumerate(f.read().splitlines())}
        probe = ctranslate2.models.Whisper(folder, device="cpu", compute_type="float32")
        chosen = [c for c in all_clips if probe.is_multilingual or c[1] == "en"]
        del probe
        paths = [p for p, _ in chosen]
        audio_s = sum(len(read_wav(p)) for p in paths) / SAMPLE_RATE
        for beam in (5, 1):
            decoding = "beam 5" if beam == 5 else "greedy"
            g = run_graft(args.graft, folder, paths, beam, args.threads)
            graft_s = sum(r["decode_s"] for r in g)
            rows.append([name, decoding, "graft f32", len(paths), audio_s, graft_s, len(paths)])
            for ct in args.compute_types.split(","):
                try:
                    model = ctranslate2.models.Whisper(
                        folder, device="cpu", compute_type=ct, intra_threads=args.threads, inter_threads=1
                    )
                except ValueError as e:
                    print(f"ctranslate2 {ct}: {e}")
                    continue
                run_ct2(model, fe, vocab, paths[0], beam)  # warm-up
                total, same = 0.0, 0
                for p, r in zip(paths, g):
                    s, tokens = run_ct2(model, fe, vocab, p, beam)
                    total += s
                    same += tokens == r["tokens"]
                rows.append([name, decoding, f"CTranslate2 {ct}", len(paths), audio_s, total, same])
                del model

    print()
    print("| model | decoding | engine | clips | audio s | processing s | RTF | tokens = graft's |")
    print("|---|---|---|---|---|---|---|---|")
    for name, decoding, engine, n, audio_s, s, same in rows:
        print(f"| {name} | {decoding} | {engine} | {n} | {audio_s:.1f} | {s:.2f} | {s / audio_s:.3f} | {same}/{n} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": model_name, "simd": simd, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
