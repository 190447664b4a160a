#!/usr/bin/env bash
# A smaller student's GGUF export in llama.cpp: builds a 15-block student of the default model
# (model.keep_layers = { every = 2 }), trains it one LoRA step, exports it as an f32 GGUF, then
# loads that file in llama.cpp (through the llama-cpp-python bindings) and checks that llama.cpp
# computes what graft computes on the same token ids: the same greedy continuation (24 tokens),
# and the same mean NLL over 64-token windows of a text (within 1e-4).
#
# Not part of CI (llama.cpp is not a dependency of graft). Needs: a graft binary and a Python
# with llama-cpp-python (`pip install llama-cpp-python`, which builds llama.cpp).
#
# Usage: scripts/student-llama-cpp.sh [WORK_DIR]   (default: student-llama-cpp)
# Environment: GRAFT (default target/debug/graft), PYTHON (default python3).
set -euo pipefail

GRAFT=${GRAFT:-target/debug/graft}
PYTHON=${PYTHON:-python3}
WORK=${1:-student-llama-cpp}
PROMPT="The Apache License lets you"
mkdir -p "$WORK"

# Training text: the project's own docs, one JSON line per paragraph; the scored text: their start.
"$PYTHON" - "$WORK" <<'EOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
text = pathlib.Path("docs/finetuning.md").read_text()
paras = [p for p in text.split("\n\n") if len(p) > 200][:16]
(work / "train.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paras))
(work / "score.txt").write_text(text[:900])
EOF
cat > "$WORK/student.toml" <<EOF
[model]
keep_layers = { every = 2 }
[adapter]
kind = "lora"
r = 4
[data]
train = "train.jsonl"
seq_len = 64
[train]
max_steps = 1
batch_size = 2
eval_batches = 1
[output]
dir = "$WORK/run"
EOF
"$GRAFT" train "$WORK/student.toml" --json > "$WORK/train.json"
"$GRAFT" export "$WORK/run" --format gguf --gguf-type f32 --out "$WORK/student.gguf" --json > "$WORK/export.json"
"$GRAFT" generate --model "$WORK/student.gguf" --prompt "$PROMPT" --max-new-tokens 24 --json > "$WORK/generate.json"
"$GRAFT" tokenize --model "$WORK/student.gguf" --json "$(cat "$WORK/score.txt")" > "$WORK/score-ids.json"
"$GRAFT" eval perplexity --model "$WORK/student.gguf" --text "$WORK/score.txt" --window 64 --json > "$WORK/ppl.json"

"$PYTHON" - "$WORK" <<'EOF'
import json, pathlib, sys
import numpy as np
from llama_cpp import Llama
work = pathlib.Path(sys.argv[1])
gen = json.loads((work / "generate.json").read_text())
ppl = json.loads((work / "ppl.json").read_text())
ids = json.loads((work / "score-ids.json").read_text())["ids"]
# An f32 KV cache (GGML type 0) without flash attention: llama.cpp's default f16 cache rounds
# keys and values, which alone moves the mean NLL by about 1e-3.
llm = Llama(model_path=str(work / "student.gguf"), n_ctx=256, logits_all=True, verbose=False, n_threads=2,
            type_k=0, type_v=0, flash_attn=False)
blocks = llm.metadata["llama.block_count"]
print(f"llama.cpp loaded {work / 'student.gguf'}: llama.block_count = {blocks}")

# Greedy continuation of the prompt's ids.
llm.reset()
llm.eval(gen["prompt_ids"])
new = []
for _ in range(len(gen["new_ids"])):
    t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    new.append(t)
    llm.eval([t])
print(f"greedy: graft     {gen['new_ids']}\n        llama.cpp {new}")

# Mean NLL over the same windows graft scored (each from position 0).
w = ppl["window"]
nll, n = 0.0, 0
for start in range(0, ppl["n_windows"] * w, w):
    win = ids[start:start + w]
    llm.reset()
    llm.eval(win)
    logits = np.asarray(llm.scores[:len(win)], dtype=np.float64)
    top = logits.max(1)
    logz = np.log(np.exp(logits - top[:, None]).sum(1)) + top
    nll += float(sum(logz[i] - logits[i, win[i + 1]] for i in range(len(win) - 1)))
    n += len(win) - 1
diff = abs(nll / n - ppl["mean_nll"])
print(f"mean NLL over {ppl['n_windows']} windows of {w} tokens: graft {ppl['mean_nll']:.7f}, "
      f"llama.cpp {nll / n:.7f} (|difference| {diff:.1e})")
ok = blocks == "15" and new == gen["new_ids"] and diff < 1e-4
print("OK" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
EOF
