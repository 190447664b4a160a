#!/usr/bin/env bash
# Side by side on this machine, in one run: graft against llama.cpp (generation on the same GGUF,
# scripts/llamacpp_bench.py) and against PyTorch + PEFT eager f32 (training steps of the same
# shapes, scripts/torch_bench.py), plus graft's QLoRA memory against its LoRA like for like.
# ROUNDS rounds, each running every workload of graft and of the reference one after the other;
# the table reports medians over rounds. Prints the CPU model and its SIMD flags first.
# A benchmark, not a test: run it on an otherwise idle machine (graft bench waits for one).
#
# Workloads (WORKLOADS):
#   generate  batch 1, greedy, 32-token prompt -> 128 new tokens: graft dense and quantized,
#             llama.cpp on the same Q4_1 GGUF
#   lora      LoRA r 8 on q,k,v,o,gate,up,down, 256 x 4 tokens per step: graft vs PyTorch + PEFT
#   full      full fine-tuning, 256 x 4: graft vs PyTorch
#   lora-mixed, full-mixed
#             the same in mixed precision: graft `--precision bf16-mixed` (bf16 products with f32
#             sums where the CPU has AVX-512 BF16, f32 elsewhere; its record says which ran) vs
#             PyTorch f32 weights under bf16 autocast
#   qlora     graft QLoRA (GGUF blocks as the frozen base) vs graft LoRA, peak RSS, with and
#             without gradient checkpointing
#
# Usage: TEXT=corpus.txt scripts/compare-cpu.sh [OUT]
#   (GRAFT, PYTHON, ROUNDS, THREADS, GGUF, WORKLOADS, STEPS, WARMUP override the defaults;
#    PYTHON needs torch, transformers, peft and llama-cpp-python)
set -euo pipefail
GRAFT=${GRAFT:-graft}
PYTHON=${PYTHON:-python3}
OUT=${1:-runs/compare-cpu}
TEXT=${TEXT:?set TEXT to a text file: the prompt and the training chunks come from it}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
WORKLOADS=${WORKLOADS:-"generate lora full lora-mixed full-mixed qlora"}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
GGUF=${GGUF:-$("$GRAFT" fetch smollm2-135m-instruct --json | jq -r '.fetched[0].path')}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
    | grep -E '^(avx|avx2|fma|f16c|avx_vnni|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ')
echo "CPU: $cpu, $THREADS threads; SIMD: $flags" | tee "$OUT/cpu.txt"

record() { # ROUND WORKLOAD IMPL: tags one JSON line from stdin and appends it
    jq -c --argjson round "$1" --arg workload "$2" --arg impl "$3" '. + {round: $round, workload: $workload, impl: $impl}' \
        >> "$RESULTS"
}
graft_train() { # ROUND WORKLOAD IMPL graft-bench-train-args...
    local r=$1 w=$2 i=$3
    shift 3
    "$GRAFT" --threads "$THREADS" bench train "$@" --seq 256 --batch 4 --steps "$STEPS" --warmup "$WARMUP" \
        --text "$TEXT" --json | record "$r" "$w" "$i"
}
torch_train() { # ROUND WORKLOAD MODE PRECISION (a failed reference run leaves its error record and the rest goes on)
    "$PYTHON" "$HERE/torch_bench.py" --device cpu --precision "$4" --modes "$3" --configs 256x4 \
        --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" | record "$1" "$2" pytorch \
        || echo "torch_bench $2 failed: see its record in $RESULTS" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for w in $WORKLOADS; do
        case $w in
            generate)
                for weights in dense quantized; do
                    "$GRAFT" --threads "$THREADS" bench generate --text "$TEXT" --weights "$weights" --runs 5 --json \
                        | record "$round" generate "graft-$weights"
                done
                "$PYTHON" "$HERE/llamacpp_bench.py" --gguf "$GGUF" --text "$TEXT" --threads "$THREADS" --runs 5 \
                    | record "$round" generate llama.cpp
                ;;
            lora | full)
                graft_train "$round" "$w" graft --mode "$w"
                torch_train "$round" "$w" "$w" f32
                ;;
            lora-mixed | full-mixed)
                graft_train "$round" "$w" graft --mode "${w%-mixed}" --precision bf16-mixed
                torch_train "$round" "$w" "${w%-mixed}" amp
                ;;
            qlora)
                graft_train "$round" qlora graft-lora --mode lora
                graft_train "$round" qlora graft-qlora --mode qlora
                graft_train "$round" qlora graft-lora-ckpt --mode lora --checkpointing
                graft_train "$round" qlora graft-qlora-ckpt --mode qlora --checkpointing
                ;;
            *) echo "unknown workload $w" >&2; exit 2 ;;
        esac
    done
done

"$PYTHON" - "$RESULTS" "$OUT/cpu.txt" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = open(sys.argv[2]).read().strip()
def med(workload, impl, key):
    xs = [r[key] for r in recs if r["workload"] == workload and r["impl"] == impl and r.get(key) is not None]
    return (statistics.median(xs), len(xs)) if xs else (None, 0)
rows = []
def row(name, a, b, goal, unit="", digits=1):
    (ga, n), (rb, _) = a, b
    if ga is None or rb is None:
        return
    rows.append(f"| {name} | {ga:,.{digits}f}{unit} | {rb:,.{digits}f}{unit} | {ga / rb:.2f}x | {goal} | {n} |")
row("decode tok/s: graft quantized vs llama.cpp", med("generate", "graft-quantized", "decode_tokens_per_s"),
    med("generate", "llama.cpp", "decode_tokens_per_s"), ">= 1.1x")
row("decode tok/s: graft dense vs llama.cpp", med("generate", "graft-dense", "decode_tokens_per_s"),
    med("generate", "llama.cpp", "decode_tokens_per_s"), "")
row("prefill tok/s: graft quantized vs llama.cpp", med("generate", "graft-quantized", "prefill_tokens_per_s"),
    med("generate", "llama.cpp", "prefill_tokens_per_s"), ">= 1.5x")
row("prefill tok/s: graft dense vs llama.cpp", med("generate", "graft-dense", "prefill_tokens_per_s"),
    med("generate", "llama.cpp", "prefill_tokens_per_s"), "")
for w, goal, rss_goal in (("lora", ">= 1.5x", "<= 0.6x"), ("full", ">= 1.2x", "<= 0.8x")):
    row(f"{w} 256x4 tok/s: graft f32 vs PyTorch f32", med(w, "graft", "tokens_per_s"), med(w, "pytorch", "tokens_per_s"), goal)
    row(f"{w} 256x4 peak RSS MB: graft f32 vs PyTorch f32", med(w, "graft", "peak_rss_mb"), med(w, "pytorch", "peak_rss_mb"),
        rss_goal, digits=0)
for w, goal in (("lora", ">= 1.5x"), ("full", ">= 1.2x")):
    row(f"{w} 256x4 tok/s: graft bf16-mixed vs PyTorch f32", med(f"{w}-mixed", "graft", "tokens_per_s"),
        med(w, "pytorch", "tokens_per_s"), goal)
    row(f"{w} 256x4 tok/s: graft bf16-mixed vs PyTorch bf16 autocast", med(f"{w}-mixed", "graft", "tokens_per_s"),
        med(f"{w}-mixed", "pytorch", "tokens_per_s"), "")
    row(f"{w} 256x4 peak RSS MB: graft bf16-mixed vs PyTorch bf16 autocast", med(f"{w}-mixed", "graft", "peak_rss_mb"),
        med(f"{w}-mixed", "pytorch", "peak_rss_mb"), "", digits=0)
row("QLoRA vs LoRA peak RSS MB (graft, no checkpointing)", med("qlora", "graft-qlora", "peak_rss_mb"),
    med("qlora", "graft-lora", "peak_rss_mb"), "<= 0.4x", digits=0)
row("QLoRA vs LoRA peak RSS MB (graft, checkpointing)", med("qlora", "graft-qlora-ckpt", "peak_rss_mb"),
    med("qlora", "graft-lora-ckpt", "peak_rss_mb"), "<= 0.4x", digits=0)
print(cpu)
print()
print("| workload | graft | reference | ratio | goal | rounds |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
# Loss curves of both precisions, first round (graft trains the real model on TEXT, PyTorch a
# random-init one on random ids, so compare each side with itself).
curves = []
for w in ("lora", "full"):
    for impl in ("graft", "pytorch"):
        f32 = [r for r in recs if r["workload"] == w and r["impl"] == impl and r.get("losses")]
        mixed = [r for r in recs if r["workload"] == f"{w}-mixed" and r["impl"] == impl and r.get("losses")]
        if f32 and mixed:
            a, b = f32[0]["losses"], mixed[0]["losses"]
            worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
            curves.append(f"| {w} | {impl} | {' '.join(f'{x:.4f}' for x in a)} | {' '.join(f'{x:.4f}' for x in b)} | {worst:.2%} |")
if curves:
    print("\n| run | impl | f32 losses | mixed losses | worst rel. diff |")
    print("|---|---|---|---|---|")
    print("\n".join(curves))
bad = [r for r in recs if r.get("contaminated")]
if bad:
    print(f"\nWARNING: {len(bad)} graft record(s) ran while other processes used the CPU (contaminated)")
PY
