#!/usr/bin/env python3
"""Reference values for graft's Hugging Face Whisper export (crates/graft/tests/whisper_hf.rs).

Loads the folder that `graft speech export --model whisper-tiny-en --out DIR` writes with
transformers' `WhisperForConditionalGeneration.from_pretrained(DIR)` (float32, CPU, eager
attention), and on the committed clips tests/golden/speech/{en,de,es}.wav records:

- the loading report: missing, unexpected and mismatched keys (all empty when the export is a
  complete Whisper checkpoint; `proj_out.weight` is tied to the token embeddings);
- the encoder output of transformers' `WhisperFeatureExtractor` log-mel (the clip's 16-bit
  samples / 32768, padded to 30 s): overall mean, population standard deviation, min, max;
- greedy decoding written out by hand as CTranslate2 runs it (prompt
  `<|startoftranscript|><|notimestamps|>`; the tokens of generation_config.json
  `suppress_tokens` masked at every step and `begin_suppress_tokens` at the first; at most
  MAX_NEW tokens): the generated ids (end of text not included) and their text.

Writes OUT (tests/golden/speech/whisper-hf.json). Made with: Python 3.11, torch 2.15.0, transformers
5.25.0, tokenizers 0.23.3, safetensors 0.8.0, numpy 2.4.6 (pip, in a virtual environment); only this
script needs them. Example:

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers safetensors numpy
  graft speech export --model whisper-tiny-en --out /tmp/tiny-en-hf
  /tmp/venv/bin/python scripts/whisper-hf-reference.py /tmp/tiny-en-hf tests/golden/speech/whisper-hf.json
"""

import json
import sys
import wave
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

CLIPS = ["en", "de", "es"]
MAX_NEW = 32


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    clips_dir = Path(__file__).resolve().parent.parent / "tests" / "golden" / "speech"
    model, info = WhisperForConditionalGeneration.from_pretrained(
        folder, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    gen = json.loads((folder / "generation_config.json").read_text())
    suppress = gen["suppress_tokens"]
    begin = gen["begin_suppress_tokens"]
    eot = gen["eos_token_id"]
    prompt = [gen["decoder_start_token_id"], gen["no_timestamps_token_id"]]
    fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    result = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "loading": {k: sorted(str(x) for x in v) for k, v in info.items() if k != "error_msgs"},
        "prompt": prompt,
        "max_new_tokens": MAX_NEW,
        "clips": {},
    }
    for clip in CLIPS:
        feats = fe(samples(clips_dir / f"{clip}.wav"), sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            enc = model.model.encoder(feats).last_hidden_state
            ids = list(prompt)
            out_ids = []
            for step in range(MAX_NEW):
                logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
                logits[suppress] = -float("inf")
                if step == 0:
                    logits[begin] = -float("inf")
                nxt = int(torch.argmax(logits))
                if nxt == eot:
                    break
                ids.append(nxt)
                out_ids.append(nxt)
        e = enc[0].numpy().astype(np.float64)
        result["clips"][clip] = {
            "encoder": {"mean": e.mean(), "std": e.std(), "min": e.min(), "max": e.max()},
            "greedy": {"ids": out_ids, "text": tok.decode(out_ids, skip_special_tokens=True)},
        }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["loading"]), file=sys.stderr)


if __name__ == "__main__":
    main()
