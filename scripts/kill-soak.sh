#!/usr/bin/env bash
# Kill soak for checkpoints and resume: runs a small LoRA training to the end once, then runs it
# again and SIGKILLs it at random moments (a third of the kills aimed at checkpoint writes),
# resuming after each kill. After every kill the run's checkpoints must all verify
# (`graft validate --checkpoint`); at the end the adapter must be byte-identical to the
# uninterrupted run's and the loss curve the same. Prints one summary line; exits 1 on any failure.
#
# Usage: scripts/kill-soak.sh [--kills 50] [--bin PATH] [--steps N] [--seed N] [--work DIR] [--keep]
#   --bin    the graft binary (default: build and use target/release/graft; a dev build such as
#            target/debug/graft works too)
#   --steps  training steps (default 2 × kills + 20: enough that the kills do not finish the run)
#   --seed   seeds the random kill moments (default: random, printed)
#   --work   working folder, kept (default: a new temporary folder, removed on success unless --keep)
set -euo pipefail

kills=50 bin="" steps="" seed=$RANDOM work="" keep=0 made_work=0
while (($#)); do
  case $1 in
    --kills) kills=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kill-soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
steps=${steps:-$((2 * kills + 20))}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $bin ]]; then
  (cd "$repo" && cargo build --release -p graft-cli)
  bin=$repo/target/release/graft
fi
bin=$(realpath "$bin")
[[ -n $work ]] || { work=$(mktemp -d -t graft-kill-soak.XXXXXX); ((keep)) || made_work=1; }
mkdir -p "$work"
work=$(realpath "$work")
RANDOM=$seed
unset RUST_BACKTRACE RUST_LIB_BACKTRACE # one-line errors in the logs
echo "kill-soak: seed $seed, $kills kills, $steps steps, bin $bin, work $work"

# Milliseconds since the epoch, and a sub-second sleep without starting a process.
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
exec {nap_fd}<> <(:)
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }

# Training data: the project's own documentation, one {"text": ...} sample per paragraph.
cat "$repo"/README.md "$repo"/docs/*.md \
  | awk 'BEGIN { RS = "" } { gsub(/[[:space:]]+/, " "); if (length($0) > 40) print }' \
  | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/{"text": "/; s/$/"}/' > "$work/data.jsonl"
cat > "$work/soak.toml" <<EOF
[adapter]
kind = "lora"
r = 4
dropout = 0.1
targets = ["q_proj", "v_proj"]

[data]
train = "data.jsonl"
seq_len = 32

[train]
max_steps = $steps
batch_size = 1
lr = 1e-3
warmup_steps = 2
seed = 11
save_every = 1
eval_every = 0
eval_batches = 1
EOF
# `graft train` into run directory $1 (more arguments after); run as the job itself (no
# subshell between), so `$!` is graft's own process id.
train=("$bin" train "$work/soak.toml" --set)

# The uninterrupted reference, timed: launch to first checkpoint, and per step.
start=$(now_ms)
"${train[@]}" "output.dir=$work/ref" > "$work/ref.log" 2>&1 &
ref_pid=$!
until [[ -e $work/ref/checkpoints/LATEST ]] || ! kill -0 "$ref_pid" 2> /dev/null; do nap 0.01; done
first_ms=$(($(now_ms) - start))
wait "$ref_pid" || { echo "kill-soak: the reference run failed:"; tail -20 "$work/ref.log"; exit 1; }
ref_ms=$(($(now_ms) - start))
step_ms=$(((ref_ms - first_ms) / (steps - 1)))
echo "kill-soak: reference run ${ref_ms} ms (first checkpoint at ${first_ms} ms, ~${step_ms} ms a step)"

run=$work/run ck=$work/run/checkpoints
soak_start=$(now_ms)
failures=() mid_save=0 aimed=0 resumes=0 done_kills=0 last_step=0 unreadable=0

latest_step() { [[ -e $ck/LATEST ]] && { local n; n=$(< "$ck/LATEST"); echo $((10#${n#step-})); } || echo 0; }
has_checkpoint() { compgen -G "$ck/step-*[0-9]/manifest.json" > /dev/null; }

# The checkpoint folder's entries with their inodes (a rewritten entry gets a new one).
listing() { stat -c '%n %i' "$ck"/* 2> /dev/null || true; }

# Evidence on disk that a kill interrupted a save: staging written after the launch, a
# `LATEST.tmp`, a complete folder newer than the one `LATEST` names, or pruning not yet done;
# counted only when this launch changed the folder (the evidence is not an earlier kill's).
killed_mid_save() {
  local marker=$1 before=$2 d newest=0 n=0 s
  [[ $(listing) != "$before" ]] || return 1
  for d in "$ck"/step-*.tmp; do [[ -d $d && $d -nt $marker ]] && return 0; done
  [[ -e $ck/LATEST.tmp ]] && return 0
  for d in "$ck"/step-*[0-9]; do
    [[ -e $d/manifest.json ]] || continue
    n=$((n + 1)); s=${d##*/step-}; s=$((10#$s)); ((s > newest)) && newest=$s
  done
  ((newest > $(latest_step) || n > 2))
}

for ((k = 1; k <= kills; k++)); do
  log=$work/run-$k.log
  marker=$work/launched
  touch "$marker"
  before=$(listing)
  args=()
  if has_checkpoint; then args=(--resume); resumes=$((resumes + 1)); fi
  "${train[@]}" "output.dir=$run" "${args[@]}" > "$log" 2>&1 &
  pid=$!
  launched=$(now_ms)
  how=random
  if ((RANDOM % 3 == 0)); then
    how=aimed
    # Aimed at a save: wait for a staging folder created by this process, then kill 0-30 ms in.
    aimed=$((aimed + 1))
    while kill -0 "$pid" 2> /dev/null; do
      for d in "$ck"/step-*.tmp; do [[ -d $d && $d -nt $marker ]] && break 2; done
      nap 0.002
    done
    delay_ms=$((RANDOM % 31))
  else
    # Anywhere from start-up (model loading) to a few steps in.
    delay_ms=$((RANDOM % (first_ms + 3 * step_ms)))
  fi
  ((delay_ms > 0)) && nap "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  if ! kill -9 "$pid" 2> /dev/null; then
    # It ended on its own before the kill.
    if wait "$pid"; then
      echo "kill-soak: the run finished after $((k - 1)) kills; use more --steps"
      break
    fi
    failures+=("kill $k: the run failed on its own: $(tail -1 "$log")")
    break
  fi
  wait "$pid" 2> /dev/null || true
  done_kills=$k
  at_ms=$(($(now_ms) - launched))
  killed_mid_save "$marker" "$before" && mid_save=$((mid_save + 1)) && where=" mid-save" || where=""
  if grep -q "skipping damaged checkpoint" "$log"; then
    unreadable=$((unreadable + 1))
    failures+=("kill $k: the resume met a damaged checkpoint: $(grep -m1 'skipping damaged' "$log")")
  fi
  if has_checkpoint || [[ -e $ck/LATEST ]]; then
    if ! out=$("$bin" validate --checkpoint "$run" 2>&1); then
      unreadable=$((unreadable + 1))
      failures+=("kill $k: checkpoint check failed: $(tail -1 <<< "$out")")
    fi
  fi
  step=$(latest_step)
  ((step < last_step)) && failures+=("kill $k: LATEST went back from step $last_step to $step")
  last_step=$step
  printf 'kill %2d (%s) at %5d ms%s: LATEST step %d\n' "$k" "$how" "$at_ms" "$where" "$step"
done

# Let it finish, then compare with the reference.
args=()
if has_checkpoint; then args=(--resume); resumes=$((resumes + 1)); fi
"${train[@]}" "output.dir=$run" "${args[@]}" > "$work/run-final.log" 2>&1 || failures+=("the final resume failed: $(tail -1 "$work/run-final.log")")
identical=no same_curve=no
if cmp -s "$work/ref/adapter/adapter_model.safetensors" "$run/adapter/adapter_model.safetensors" \
  && cmp -s "$work/ref/adapter/adapter_config.json" "$run/adapter/adapter_config.json"; then
  identical=yes
else
  failures+=("the final adapter differs from the uninterrupted run's")
fi
curve() { sed -E 's/,"tokens_per_s".*//' "$1/metrics.jsonl"; }
if diff <(curve "$work/ref") <(curve "$run") > /dev/null 2>&1; then
  same_curve=yes
else
  failures+=("metrics.jsonl (step, loss, lr, grad_norm) differs from the uninterrupted run's")
fi
wall_s=$((($(now_ms) - soak_start) / 1000)) ref_s=$((ref_ms / 1000))

for f in "${failures[@]}"; do echo "FAIL: $f"; done
((${#failures[@]} == 0)) && status=ok || status="${#failures[@]} failures"
echo "kill-soak: $status; $done_kills/$kills kills ($mid_save mid-save, $aimed aimed at saves), $resumes resumes, unreadable checkpoints: $unreadable, final adapter bit-identical: $identical, loss curve identical: $same_curve, ${wall_s}s killed and resumed + ${ref_s}s reference (seed $seed)"
if ((${#failures[@]})) || ((done_kills < kills)); then
  echo "kill-soak: kept $work for inspection"
  exit 1
fi
((made_work == 0)) || rm -rf "$work"
