#!/usr/bin/env bash
# Side by side on this machine: EfficientNet-Lite0 image-classifier training steps in graft
# (`graft bench vision-train`) and in PyTorch eager (scripts/vision_torch_bench.py: the same
# architecture, shapes, optimizer and fixed random batch), one after the other, same thread count.
# Prints the CPU model and its SIMD flags, then a table of images/s and peak RSS with the ratio.
# A benchmark, not a test: run it on an otherwise idle machine.
# Usage: scripts/vision-speed.sh [OUT]   (GRAFT, PYTHON, MODES, IMAGE, BATCH, STEPS, WARMUP,
#        THREADS override the defaults)
set -euo pipefail
GRAFT=${GRAFT:-graft}
PYTHON=${PYTHON:-python3}
OUT=${1:-runs/vision-speed}
MODES=${MODES:-"full scratch"}
IMAGE=${IMAGE:-64}
BATCH=${BATCH:-32}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ')
echo "CPU: $cpu, $THREADS threads; SIMD: $flags" | tee "$OUT/cpu.txt"
for mode in $MODES; do
    RAYON_NUM_THREADS=$THREADS "$GRAFT" bench vision-train --mode "$mode" --image "$IMAGE" --batch "$BATCH" \
        --steps "$STEPS" --warmup "$WARMUP" --json | jq -c '. + {impl: "graft"}' >> "$RESULTS"
    "$PYTHON" "$(dirname "$0")/vision_torch_bench.py" --mode "$mode" --image "$IMAGE" --batch "$BATCH" \
        --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" | jq -c '. + {impl: "pytorch"}' >> "$RESULTS"
done
jq -rs '
  "| mode | images | graft images/s | PyTorch images/s | ratio | graft peak RSS MB | PyTorch peak RSS MB | RSS ratio |",
  "|---|---|---|---|---|---|---|---|",
  (group_by(.mode) | .[] | (map(select(.impl == "graft"))[0]) as $g | (map(select(.impl == "pytorch"))[0]) as $p
    | "| \($g.mode) | \($g.batch) x \($g.image)² | \($g.images_per_s * 10 | round / 10) | \($p.images_per_s * 10 | round / 10) | "
      + "\($g.images_per_s / $p.images_per_s * 100 | round / 100) | \($g.peak_rss_mb | round) | \($p.peak_rss_mb | round) | "
      + "\($g.peak_rss_mb / $p.peak_rss_mb * 100 | round / 100) |")
' "$RESULTS" | tee "$OUT/table.md"
