#!/usr/bin/env bash
# The measured continual-learning matrix of docs/multitask.md: configs/continual-tweets-appstream.toml
# (tweet sentiment by accuracy -> AppStream summaries by loss -> Austen by loss, every method) run
# once per seed with STEPS steps a stage, then every method's metrics and score matrix averaged
# over the seeds.
# Results: OUT/seed-S/ (each seed's `graft continual` folder, summary.json and report.md) and
# OUT/table.md (mean +- std over seeds of each method's metrics and of each matrix entry).
# Usage: scripts/continual-demo.sh [OUT]   (GRAFT, SEEDS, STEPS, EVAL_BATCHES override the defaults)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/continual-demo}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-20}
EVAL_BATCHES=${EVAL_BATCHES:-8}
CONFIG=$(dirname "$0")/../configs/continual-tweets-appstream.toml
mkdir -p "$OUT"

summaries=()
for seed in $SEEDS; do
    summaries+=("$OUT/seed-$seed/summary.json")
    # A seed whose run finished is not run again, so the measurement can be continued.
    [ -e "$OUT/seed-$seed/summary.json" ] && continue
    rm -rf "$OUT/seed-$seed"
    "$GRAFT" continual "$CONFIG" --set train.seed="$seed" --set train.max_steps="$STEPS" \
        --set train.warmup_steps=2 --set train.eval_batches="$EVAL_BATCHES" \
        --set output.dir="$OUT/seed-$seed" --json > "$OUT/seed-$seed.json"
    # Only summary.json is read from here on: the stages' checkpoints and full-size weights
    # (about 8 GB a seed with sequential full fine-tuning) go.
    find "$OUT/seed-$seed" -name checkpoints -type d -prune -exec rm -rf {} +
    find "$OUT/seed-$seed" -name '*.safetensors' -size +20M -delete
done

# Mean +- sample std over seeds of each method's metrics and matrix entries.
jq -L "$(dirname "$0")" -rs '
  include "stats";
  (.[0].tasks | map(.name)) as $tasks
  | (map(.methods) | transpose) as $by_method
  | "Seeds: \(length). Tasks in order: \($tasks | join(" → ")); base scores: \(.[0].tasks | map("\(.name) \(.base | fmt)") | join(", ")).",
    "",
    "| method | average final score | average forgetting | BWT | FWT |",
    "|---|---|---|---|---|",
    ($by_method[] | "| \(.[0].method) | \(map(.average_final) | pm) | "
       + (if .[0].metrics then "\(map(.metrics.average_forgetting) | pm) | \(map(.metrics.bwt) | pm) | \(map(.metrics.fwt) | pm) |"
          else "– | – | – |" end)),
    "",
    ($by_method[] as $m
      | "**\($m[0].method)**: rows = after training through a stage, columns = the task scored.",
        "",
        "| after | \($tasks | join(" | ")) |",
        "|---|\($tasks | map("---") | join("|"))|",
        (range($m[0].r | length) as $j
          | "| \(if $m[0].method == "multitask" then "all tasks at once" else $tasks[$j] end) | "
            + ([range($tasks | length) as $i | $m | map(.r[$j][$i]) | pm] | join(" | ")) + " |"),
        "")
' "${summaries[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
