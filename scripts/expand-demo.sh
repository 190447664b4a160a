#!/usr/bin/env bash
# The measured block-expansion comparison of docs/multitask.md: SmolLM2-135M-Instruct adapted to
# Jane Austen's novels (plain text, packed, held-out chapters) four ways at about the same
# number of trainable weights, and full fine-tuning as the reference:
#   expanded  2 new identity blocks (LLaMA Pro), only they train          7,080,192 weights
#   lora      LoRA r 24 on all seven projections of every block            7,326,720 weights
#   freeze    the top two original blocks (28 and 29) train                7,080,192 weights
#   full      every weight                                               134,515,008 weights
# Per seed and method: STEPS steps of 4 x 256 tokens (cosine schedule, 3 warmup steps; learning
# rates: the usual ones of each kind, set before any run and not tuned). Scores: the domain's held-out loss (the
# run's evaluation: EVAL_BATCHES x 4 packed windows of the held-out chapters) and the loss on
# general text the run never saw (modern English: AppStream component descriptions, windows of
# 256 tokens, `graft eval perplexity`), each against the base model's.
# Results: OUT/results.jsonl (one line per run), OUT/table.md (mean +- std over seeds) and OUT/report/
# (`graft report`: the same per method, with charts).
# Usage: scripts/expand-demo.sh [OUT]   (GRAFT, SEEDS, STEPS, EVAL_BATCHES, GENERAL_CHARS override)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/expand-demo}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-30}
EVAL_BATCHES=${EVAL_BATCHES:-8}
GENERAL_CHARS=${GENERAL_CHARS:-40000}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"

# General text: the descriptions of the AppStream test components (their user turns, after the
# instruction line), the first GENERAL_CHARS characters.
build_once appstream "$OUT/data/appstream"
GENERAL="$OUT/general.txt"
# (jq cuts the text itself: `head -c` would end jq with SIGPIPE under pipefail.)
jq -rs --argjson n "$GENERAL_CHARS" 'map(.messages[0].content | split("\n\n")[1:] | join("\n\n")) | join("\n") | .[:$n]' \
    "$OUT/data/appstream/summarize.test.jsonl" > "$GENERAL"

# The shared settings: configs/expand-austen.toml's data and schedule; each method adds its own.
CONFIG="$OUT/austen.toml"
cat > "$CONFIG" <<EOF
[model]
name = "smollm2-135m-instruct"

[data]
train = "dataset:austen/text.train.jsonl"
eval = "dataset:austen/text.test.jsonl"
format = "text"
seq_len = 256
packing = true

[train]
batch_size = 4
grad_accum = 1
schedule = "cosine"
warmup_steps = 3
eval_every = 0
save_every = 0
eval_batches = $EVAL_BATCHES
EOF

general_loss() { "$GRAFT" eval perplexity "$@" --text "$GENERAL" --window 256 --json | jq .mean_nll; }

if ! done_already base 0; then
    jq -cn --argjson g "$(general_loss)" '{name: "base", seed: 0, general_loss: $g}' >> "$RESULTS"
fi

run() { # NAME SEED LR ARGS...
    local name=$1 seed=$2 lr=$3; shift 3
    done_already "$name" "$seed" && return
    local dir="$OUT/$name-$seed" g
    "$GRAFT" train "$CONFIG" "$@" --set train.seed="$seed" --set train.lr="$lr" --set train.max_steps="$STEPS" \
        --set output.dir="$dir" --json > "$dir.json"
    if [ -e "$dir/model/config.json" ]; then g=$(general_loss --model "$dir/model"); else g=$(general_loss --adapter "$dir"); fi
    jq -c --arg name "$name" --argjson seed "$seed" --argjson g "$g" --arg lr "$lr" \
        '{name: $name, seed: $seed, lr: $lr, trainable_params, base_eval_loss, final_eval_loss, general_loss: $g,
          steps, wall_time_s, peak_rss_mb}' "$dir/summary.json" >> "$RESULTS"
    rm -rf "$dir/checkpoints" "$dir/model"   # scored: the weights are not needed any more
}

for seed in $SEEDS; do
    run expanded "$seed" 1e-4 --set model.expand_blocks=2 --set adapter.kind=expanded
    run lora "$seed" 2e-4 --set adapter.kind=lora --set adapter.r=24 --set adapter.alpha=48.0
    run freeze "$seed" 1e-4 --set adapter.kind=freeze --set 'adapter.targets=["layers.28.*", "layers.29.*"]'
    run full "$seed" 5e-5 --set adapter.kind=none
done

# The table: mean +- sample std over seeds; gains and losses against the base model.
jq -L "$(dirname "$0")" -rs '
  include "stats";
  (map(select(.name == "base")) | first.general_loss) as $g0
  | (map(select(.name != "base")) | group_by(.name)) as $groups
  | "| method | seeds | trainable | lr | domain loss (base → after) | domain gain | general loss (base \($g0 | fmt)) | general-text cost | wall time (s) |",
    "|---|---|---|---|---|---|---|---|---|",
    ($groups[] | "| \(.[0].name) | \(length) | \(.[0].trainable_params) | \(.[0].lr) | \(.[0].base_eval_loss | fmt) → \(map(.final_eval_loss) | pm) | \(map(.base_eval_loss - .final_eval_loss) | pm) | \(map(.general_loss) | pm) | \(map(.general_loss - $g0) | pm) | \(map(.wall_time_s) | pm) |")
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
"$GRAFT" report "$RESULTS" --by name --metric final_eval_loss,general_loss,wall_time_s \
    --title "Block expansion against LoRA, top-block and full fine-tuning on Austen" --out "$OUT/report" > /dev/null
