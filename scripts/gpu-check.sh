#!/usr/bin/env bash
# graft's GPU checks in one pass: device parity, loss curves, throughput, PyTorch baseline.
#
# Runs from the repository root of a checkout on a machine with an NVIDIA GPU, Python with
# torch + transformers + peft, and the CUDA 13 libraries inside that Python's nvidia/*/lib
# folders. Needs no Rust toolchain and no network: the graft binary comes built
# (scripts/build-cuda.sh writes dist/graft-cuda). Finishes in well under 8 minutes on an H100.
#
# Usage: scripts/gpu-check.sh [--cpu-dry-run] [--results DIR] [BINARY]
#   BINARY         graft built with --features cuda, plain or xz-compressed (default
#                  dist/graft-cuda, else dist/graft-cuda.xz; with --cpu-dry-run: the release,
#                  else debug, binary of this checkout's cargo target dir)
#   --results DIR  where results.jsonl, summary.md and gpu-check.log go (default gpu-check-results)
#   --cpu-dry-run  the same steps on the CPU with small shapes and a normal CPU build: exercises
#                  this script's logic on a machine without a GPU
# Environment: PYTHON (the interpreter holding torch; default python3),
#              GPU_CHECK_BUDGET_S (start no new step after this many seconds; default 450).
#
# Steps (each with its own time limit; a failing step is recorded and the next one runs):
#   1. nvidia-smi and versions; LD_LIBRARY_PATH from the Python environment's nvidia/*/lib
#   2. graft selftest: logits, LoRA loss + gradients and a LoRA loss curve, device vs CPU, in
#      f32 (tight limits) and bf16 (loose limits), on seeded random weights
#   3. graft bench train --mode lora on the CPU and on the device (f32, same seed): loss curves
#   4. graft bench generate (f32, bf16) / forward (bf16) on the device (random weights)
#   5. graft bench train --mode lora|full, 512x8 and 1024x4, bf16 (skipped when the binary lacks it)
#      (the dry run uses f32 for forward and training: CPU bf16 kernels are slow)
#   6. scripts/torch_bench.py: PyTorch + PEFT on the same shapes (bf16, and bf16 autocast)
#   7. a Markdown summary of results.jsonl (printed, and written to summary.md)
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0
BIN=""
RESULTS="gpu-check-results"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --results) RESULTS="$2"; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    *) BIN="$1" ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
START=$(date +%s)

if [[ $DRY == 1 ]]; then
  DEVICE=cpu
  DTYPE=f32  # candle's and torch's CPU bf16 kernels are slow; the dry run checks logic, not speed
  if [[ -z "$BIN" ]]; then
    target="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null)"
    BIN="${target:-target}/release/graft"
    [[ -x "$BIN" ]] || BIN="${target:-target}/debug/graft"
  fi
  SELFTEST_SHAPE=(--shape tiny --seq 16 --batch 2 --train-steps 3)
  CURVE=(--seq 32 --batch 2 --steps 3)
  TRAIN_CONFIGS=(32x2)
  STEPS=(--steps 2 --warmup 1)
  GEN=(--prompt-tokens 8 --new-tokens 8 --runs 1 --warmup 0)
  FWD=(--seq 32 --batch 2 --runs 1 --warmup 0)
  TORCH_CONFIGS=32x2
  TORCH_STEPS=(--steps 2 --warmup 1 --runs 1 --gen-prompt 8 --gen-new 8)
  TORCH_PRECISIONS=(f32)
else
  DEVICE=cuda
  DTYPE=bf16
  if [[ -z "$BIN" ]]; then
    BIN=dist/graft-cuda
    [[ -x "$BIN" ]] || BIN=dist/graft-cuda.xz
  fi
  SELFTEST_SHAPE=(--shape default --seq 64 --batch 2 --train-steps 5)
  CURVE=(--seq 128 --batch 4 --steps 5)
  TRAIN_CONFIGS=(512x8 1024x4)
  STEPS=(--steps 10 --warmup 3)
  GEN=(--prompt-tokens 32 --new-tokens 128 --runs 5 --warmup 1)
  FWD=(--seq 512 --batch 8 --runs 5 --warmup 1)
  TORCH_CONFIGS=512x8,1024x4
  TORCH_STEPS=(--steps 10 --warmup 3 --runs 5 --gen-prompt 32 --gen-new 128)
  TORCH_PRECISIONS=(bf16 amp)
fi

mkdir -p "$RESULTS"
RES="$RESULTS/results.jsonl"
LOG="$RESULTS/gpu-check.log"
: >"$RES"
: >"$LOG"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

say() { echo "gpu-check: $*" | tee -a "$LOG" >&2; }

# Appends one record to results.jsonl: {"check", "status", "secs", ...extra JSON fields}.
record() { # NAME STATUS SECS [EXTRA_JSON]
  local extra="${4:-}"
  [[ -n "$extra" ]] || extra='{}'
  "$PY" - "$1" "$2" "$3" "$extra" >>"$RES" <<'EOF'
import json, sys
name, status, secs, extra = sys.argv[1:5]
rec = {"check": name, "status": status, "secs": float(secs)}
rec.update(json.loads(extra))
print(json.dumps(rec))
EOF
}

# Samples the GPU's used memory every 100 ms into FILE until stop_sampler.
SAMPLER=""
start_sampler() {
  SAMPLER=""
  [[ $DRY == 1 ]] && return
  command -v nvidia-smi >/dev/null || return
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$1" 2>/dev/null &
  SAMPLER=$!
}
stop_sampler() {
  [[ -n "$SAMPLER" ]] && { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; }
  SAMPLER=""
}

# step NAME TIMEOUT CMD...: runs CMD with a time limit; every JSON line it prints on stdout
# becomes a record (with the sampled GPU memory peak); a failure without JSON is recorded too.
step() {
  local name="$1" limit="$2"; shift 2
  local now=$(( $(date +%s) - START ))
  if (( now > BUDGET )); then
    say "skipping $name: ${now}s spent, budget ${BUDGET}s"
    record "$name" skip 0 '{"note": "time budget spent"}'
    return
  fi
  say "$name: $*"
  local t0=$(date +%s.%N)
  start_sampler "$TMP/$name.smi"
  timeout --kill-after=10 "$limit" "$@" >"$TMP/$name.out" 2> >(tee -a "$LOG" >&2)
  local rc=$?
  stop_sampler
  local secs
  secs=$("$PY" -c "import time; print(round(time.time() - $t0, 2))")
  local status=ok
  (( rc == 124 || rc == 137 )) && status=timeout
  (( rc != 0 && rc != 124 && rc != 137 )) && status=fail
  "$PY" - "$name" "$status" "$secs" "$rc" "$TMP/$name.out" "$TMP/$name.smi" "$LOG" >>"$RES" <<'EOF'
import json, os, sys
name, status, secs, rc, out, smi, log = sys.argv[1:8]
peak = None
if os.path.exists(smi):
    vals = [int(v) for v in open(smi).read().split() if v.strip().isdigit()]
    peak = max(vals) if vals else None
recs = []
for line in open(out, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
if not recs:
    tail = open(log, errors="replace").read().splitlines()[-5:]
    recs = [{"error": f"exit status {rc}, no JSON on stdout", "stderr_tail": tail}]
for r in recs:
    rec = {"check": name, "status": status if "error" not in r else "fail", "secs": float(secs), "rc": int(rc)}
    if peak is not None:
        rec["gpu_mem_used_peak_mb"] = peak
    rec["result"] = r
    print(json.dumps(rec))
EOF
  say "$name: $status (${secs}s)"
}

# ---- 1. machine, libraries, binary ---------------------------------------------------------
say "mode: $([[ $DRY == 1 ]] && echo 'cpu dry run' || echo gpu), binary $BIN, python $PY"
if [[ $DRY == 0 ]]; then
  if nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1; then
    cat "$RESULTS/nvidia-smi.txt" >&2
    gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
    record machine ok 0 "$("$PY" -c 'import json,sys; print(json.dumps({"gpu": sys.argv[1]}))' "$gpu")"
  else
    say "nvidia-smi failed: $(head -3 "$RESULTS/nvidia-smi.txt")"
    record machine fail 0 '{"note": "nvidia-smi failed"}'
  fi
  # The CUDA 13 runtime, cuBLAS, cuRAND and NVRTC that the binary links come from the Python
  # environment's NVIDIA wheels (nvidia/cu13/lib, and nvidia/<name>/lib in older layouts).
  libs="$("$PY" -c 'import glob, os, nvidia; print(":".join(sorted({d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib"))})))' 2>/dev/null)"
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
if [[ "$BIN" == *.xz && -f "$BIN" ]]; then
  # Unpacked with Python's lzma: the GPU machine need not have xz.
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN" "$TMP/graft" \
    && chmod +x "$TMP/graft" && say "unpacked $BIN" && BIN="$TMP/graft"
fi
if [[ ! -x "$BIN" ]]; then
  say "no executable graft binary at $BIN (build it with scripts/build-cuda.sh, or pass its path)"
  record binary fail 0 '{"note": "binary missing"}'
  GRAFT_OK=0
else
  missing="$(ldd "$BIN" 2>/dev/null | grep 'not found' || true)"
  if [[ -n "$missing" ]]; then
    say "the binary's libraries are not all found: $missing"
    record binary fail 0 "$("$PY" -c 'import json,sys; print(json.dumps({"missing_libraries": sys.argv[1].split(chr(10))}))' "$missing")"
    GRAFT_OK=0
  else
    record binary ok 0 "$("$PY" -c 'import json,sys; print(json.dumps({"version": sys.argv[1]}))' "$("$BIN" --version 2>&1)")"
    GRAFT_OK=1
  fi
fi
has_train_bench() { "$BIN" bench train --help >/dev/null 2>&1; }

if [[ $GRAFT_OK == 1 ]]; then
  # ---- 2. device parity ----------------------------------------------------------------------
  # In the dry run the "device" is the CPU too: f32 must match exactly, bf16 is checked against f32.
  if [[ $DRY == 1 ]]; then
    step selftest_f32 120 "$BIN" selftest --device cpu --dtypes f32 "${SELFTEST_SHAPE[@]}" --json
    step selftest_bf16 120 "$BIN" selftest --device cpu --dtypes bf16 --reference-dtype f32 "${SELFTEST_SHAPE[@]}" --json
  else
    step selftest_f32 180 "$BIN" selftest --device cuda --dtypes f32 "${SELFTEST_SHAPE[@]}" --json
    step selftest_bf16 180 "$BIN" selftest --device cuda --dtypes bf16 "${SELFTEST_SHAPE[@]}" --json
  fi

  # ---- 3. LoRA loss curves through the training benchmark: CPU vs device ----------------------
  if has_train_bench; then
    common=(--random-init --wait-idle 0 --json --mode lora --warmup 0 --dtype f32)
    step curve_cpu 150 "$BIN" bench train "${common[@]}" "${CURVE[@]}" --device cpu
    step curve_device 150 "$BIN" bench train "${common[@]}" "${CURVE[@]}" --device "$DEVICE"
  else
    record curve_cpu skip 0 '{"note": "this graft binary has no `bench train`"}'
  fi

  # ---- 4. inference throughput on the device ---------------------------------------------------
  for dt in f32 bf16; do
    step "generate_$dt" 120 "$BIN" bench generate --random-init --wait-idle 0 --json --device "$DEVICE" --dtype "$dt" "${GEN[@]}"
  done
  step "forward_$DTYPE" 120 "$BIN" bench forward --random-init --wait-idle 0 --json --device "$DEVICE" --dtype "$DTYPE" "${FWD[@]}"

  # ---- 5. training throughput on the device ----------------------------------------------------
  if has_train_bench; then
    for mode in lora full; do
      for cfg in "${TRAIN_CONFIGS[@]}"; do
        step "train_${mode}_$cfg" 150 "$BIN" bench train --mode "$mode" --seq "${cfg%x*}" --batch "${cfg#*x}" \
          "${STEPS[@]}" --random-init --device "$DEVICE" --dtype "$DTYPE" --wait-idle 0 --json
      done
    done
  else
    say "skipping the training benchmarks: this graft binary has no \`bench train\` (rebuild from a branch that has it)"
    record train skip 0 '{"note": "this graft binary has no `bench train`"}'
  fi
fi

# ---- 6. PyTorch + PEFT baseline ----------------------------------------------------------------
torch_check='import torch, transformers, peft'
[[ $DRY == 0 ]] && torch_check="$torch_check; assert torch.cuda.is_available(), 'torch sees no GPU'"
if "$PY" -c "$torch_check" 2>>"$LOG"; then
  tdev=$([[ $DRY == 1 ]] && echo cpu || echo cuda)
  for prec in "${TORCH_PRECISIONS[@]}"; do
    modes=lora,full,forward,generate
    [[ $prec == amp ]] && modes=lora
    step "torch_$prec" 300 "$PY" scripts/torch_bench.py --device "$tdev" --precision "$prec" --modes "$modes" \
      --configs "$TORCH_CONFIGS" "${TORCH_STEPS[@]}"
  done
else
  say "skipping the PyTorch baseline: $PY cannot import torch, transformers and peft$([[ $DRY == 0 ]] && echo ' with CUDA')"
  record torch skip 0 '{"note": "torch, transformers or peft missing"}'
fi

# ---- 7. summary -----------------------------------------------------------------------------------
"$PY" scripts/gpu_check_summary.py "$RES" | tee "$RESULTS/summary.md"
say "done in $(( $(date +%s) - START ))s; results in $RESULTS/"
# Exit status: 1 when a graft step failed or a comparison in the summary did (skips and the
# PyTorch side do not count).
"$PY" - "$RES" "$RESULTS/summary.md" <<'EOF'
import json, sys
bad = [r["check"] for r in map(json.loads, open(sys.argv[1])) if r["status"] in ("fail", "timeout") and not r["check"].startswith("torch")]
if "**FAIL**" in open(sys.argv[2]).read():
    bad.append("a comparison in summary.md")
if bad:
    print("gpu-check: failed: " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
