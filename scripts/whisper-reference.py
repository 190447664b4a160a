#!/usr/bin/env python3
"""Reference values for graft's Whisper network (crates/graft/tests/whisper_parity.rs).

Runs CTranslate2 (CPU, compute_type float32) on the committed clips tests/golden/speech/
{en,de,es}.wav with the CTranslate2 Whisper folders given on the command line (graft's asset
folders `whisper-tiny-en` and `whisper-base`, as `graft::assets::ensure` caches them) and writes
into OUT (tests/golden/speech):

- `whisper.safetensors` (float32), per model M (`tiny-en`, `base`) and clip C:
  - `M_C_enc_head`: the encoder output's first 8 frames, `[8, d_model]`;
  - `M_C_enc_frame_mean`, `M_C_enc_frame_std`: mean and (population) standard deviation over
    the channels of each of the 1500 frames, `[1500]`;
- `whisper.json`: per model and clip the encoder output's overall mean, std, min and max; the
  greedy decodings (beam_size=1, suppress_tokens=[-1] (config.json `suppress_ids`),
  suppress_blank=True (`suppress_ids_begin` at the first step), without timestamps,
  max_length=MAX_LENGTH): each with its prompt ids, generated ids (end of text not included)
  and text; for `base` also the detected language (`detect_language`: the language token with
  the highest probability after `<|startoftranscript|>`) with its probability and the three most
  likely languages, and the decoding with the detected language's prompt; for the clips in
  BEAM_CLIPS also the beam search decoding (`beam5`: beam_size=5, CTranslate2's defaults
  patience=1, length_penalty=1, otherwise as the greedy one, with the clip's language).

Prompts: `<|startoftranscript|><|notimestamps|>` for the English-only model,
`<|startoftranscript|><|xx|><|transcribe|><|notimestamps|>` for the multilingual one (`xx` the
clip's language, and also the detected one). CTranslate2 generates at most
`min(max_length / 2, max_length - (prompt length - 1))` tokens.

The features are transformers' `WhisperFeatureExtractor` log-mel of the clip's 16-bit samples
/ 32768, padded to 30 s ([1, 80, 3000]); graft's own log-mel equals it within 1.2e-7
(tests/golden/speech/reference.safetensors).

Made with: Python 3.11, ctranslate2 4.8.5, numpy 2.4.6, transformers 5.25.0, tokenizers 0.23.3,
safetensors 0.8.0 (pip, in a virtual environment). Needed only to run this script, never by graft. Example:

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install ctranslate2 numpy transformers tokenizers safetensors
  /tmp/venv/bin/python scripts/whisper-reference.py --out tests/golden/speech \\
      --model tiny-en=$HOME/.cache/graft/models/whisper-tiny-en \\
      --model base=$HOME/.cache/graft/models/whisper-base
"""

import argparse
import json
import os
import wave

import ctranslate2
import numpy as np
import safetensors.numpy
import tokenizers
import transformers
from transformers import WhisperFeatureExtractor

CLIPS = ["en", "de", "es"]
HEAD_FRAMES = 8
MAX_LENGTH = 64
# Clips also decoded with beam_size=5, per model name.
BEAM_CLIPS = {"tiny-en": ["en"], "base": ["de"]}


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == 16000, path
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.astype(np.float32) / 32768.0


def generate(model, features, prompt_tokens, tokenizer, beam_size=1):
    prompt = [tokenizer.token_to_id(t) for t in prompt_tokens]
    assert None not in prompt, prompt_tokens
    r = model.generate(
        features,
        [prompt],
        beam_size=beam_size,
        max_length=MAX_LENGTH,
        suppress_blank=True,
        suppress_tokens=[-1],
        return_scores=True,
    )[0]
    ids = r.sequences_ids[0]
    return {
        "prompt": prompt,
        "ids": ids,
        "text": tokenizer.decode(ids, skip_special_tokens=True),
        "score": r.scores[0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (tests/golden/speech)")
    ap.add_argument(
        "--model", action="append", required=True, help="NAME=FOLDER of a CTranslate2 Whisper model"
    )
    args = ap.parse_args()
    tensors = {}
    report = {
        "versions": {
            "ctranslate2": ctranslate2.__version__,
            "numpy": np.__version__,
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
        },
        "compute_type": "float32",
        "head_frames": HEAD_FRAMES,
        "max_length": MAX_LENGTH,
        "models": {},
    }
    fe = WhisperFeatureExtractor(feature_size=80)
    for spec in args.model:
        name, folder = spec.split("=", 1)
        model = ctranslate2.models.Whisper(folder, device="cpu", compute_type="float32")
        tokenizer = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        entry = {"multilingual": model.is_multilingual, "clips": {}}
        for clip in CLIPS:
            x = read_wav(os.path.join(args.out, f"{clip}.wav"))
            mel = fe(x, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
            features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))
            enc = np.array(model.encode(features, to_cpu=True))[0].astype(np.float32)
            tensors[f"{name}_{clip}_enc_head"] = np.ascontiguousarray(enc[:HEAD_FRAMES])
            tensors[f"{name}_{clip}_enc_frame_mean"] = enc.mean(axis=1).astype(np.float32)
            tensors[f"{name}_{clip}_enc_frame_std"] = enc.std(axis=1).astype(np.float32)
            c = {
                "encoder": {
                    "shape": list(enc.shape),
                    "mean": float(enc.mean()),
                    "std": float(enc.std()),
                    "min": float(enc.min()),
                    "max": float(enc.max()),
                }
            }
            if model.is_multilingual:
                langs = model.detect_language(features)[0]
                top = langs[0][0]
                c["detected"] = {"language": top, "prob": langs[0][1], "top3": langs[:3]}
                prompt = ["<|startoftranscript|>", f"<|{clip}|>", "<|transcribe|>", "<|notimestamps|>"]
                c["greedy"] = generate(model, features, prompt, tokenizer)
                detected = ["<|startoftranscript|>", top, "<|transcribe|>", "<|notimestamps|>"]
                c["greedy_detected"] = generate(model, features, detected, tokenizer)
            else:
                prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
                c["greedy"] = generate(model, features, prompt, tokenizer)
            if clip in BEAM_CLIPS.get(name, []):
                c["beam5"] = generate(model, features, prompt, tokenizer, beam_size=5)
                print(name, clip, "beam5", repr(c["beam5"]["text"]))
            entry["clips"][clip] = c
            print(name, clip, c.get("detected", {}).get("language", ""), repr(c["greedy"]["text"]))
        report["models"][name] = entry
    safetensors.numpy.save_file(tensors, os.path.join(args.out, "whisper.safetensors"))
    with open(os.path.join(args.out, "whisper.json"), "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
