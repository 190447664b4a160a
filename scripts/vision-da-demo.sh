#!/usr/bin/env bash
# The measured domain-adaptation report of docs/vision.md: EfficientNet-Lite0 with LoRA (r 8 on
# every 1x1 convolution) and a linear head, trained on a quarter of each class's labels
# (LABEL_FRACTION) of a source digit dataset and
# scored on a target digit dataset, for MNIST-5k -> scikit-learn's 8x8 digits and back:
#   source_only  the source's labels alone (the `[adapt]` section at weight 0: target scored, not used)
#   coral, mmd, dann   the same plus the alignment to the target's unlabelled training images (weight 1)
#   oracle       trained on the target's own labels (its training split), the ceiling
# Images are resized to SIZE x SIZE; EPOCHS epochs of batches of 32, AdamW 1e-2 (LoRA at a tenth);
# every setting was fixed before any run. Target scores: accuracy and macro-F1 on the target's
# test split, and the label-free mean entropy / information maximisation of its predictions.
# Results: OUT/results.jsonl (one line per run) and OUT/table.md (mean +- std over seeds).
# Usage: scripts/vision-da-demo.sh [OUT]   (GRAFT, SEEDS, SIZE, EPOCHS, DIRECTIONS, LABEL_FRACTION
#        override; a small LABEL_FRACTION makes a quick trial run)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/vision-da-demo}
SEEDS=${SEEDS:-"1 2 3"}
SIZE=${SIZE:-32}
EPOCHS=${EPOCHS:-5}
LABEL_FRACTION=${LABEL_FRACTION:-0.25}
DIRECTIONS=${DIRECTIONS:-"mnist-5k:digits-8x8 digits-8x8:mnist-5k"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
. "$(dirname "$0")/demo-lib.sh"

CONFIG="$OUT/base.toml"
cat > "$CONFIG" <<TOML
[data]
label_fraction = $LABEL_FRACTION

[input]
resize = $SIZE
crop = $SIZE

[train]
lora = { r = 8, alpha = 16.0 }

[head]
epochs = $EPOCHS
batch_size = 32
lr = 1e-2

[output]
dir = "unused"
TOML

run() { # DIRECTION LABEL SEED TRAIN_ON TARGET METHOD WEIGHT
    local direction=$1 label=$2 seed=$3 source=$4 target=$5 method=$6 weight=$7
    local name="$direction:$label" dir="$OUT/${direction/:/-to-}-$label-$seed"
    done_already "$name" "$seed" && return
    local adapt=(--set "adapt={ method = \"$method\", target = \"$target\", weight = $weight }")
    "$GRAFT" vision train "$CONFIG" --set "data.dataset=\"$source\"" --set "data.seed=$seed" \
        --set "head.seed=$seed" --set "output.dir=\"$dir\"" "${adapt[@]}" --json > "$dir.json"
    jq -c --arg name "$name" --argjson seed "$seed" --arg d "${direction/:/ → }" --arg method "$label" \
        '{name: $name, seed: $seed, direction: $d, method: $method, trained_on: .dataset, target: .target.dataset,
          target_accuracy: .target.test.accuracy, target_macro_f1: .target.test.macro_f1,
          mean_entropy: .target.mean_entropy, information_maximization: .target.information_maximization,
          source_accuracy: .test.accuracy, train_s}' "$dir.json" >> "$RESULTS"
    rm -rf "$dir/checkpoints"
}

for direction in $DIRECTIONS; do
    source=${direction%%:*}
    target=${direction##*:}
    for seed in $SEEDS; do
        run "$direction" source_only "$seed" "$source" "$target" coral 0
        for method in coral mmd dann; do run "$direction" "$method" "$seed" "$source" "$target" "$method" 1; done
        # The oracle trains on the target's labels; `[adapt]` towards itself at weight 0 scores
        # its test split the same way.
        run "$direction" oracle "$seed" "$target" "$target" coral 0
    done
done

jq -L "$(dirname "$0")" -rs '
  include "stats";
  "| source → target | method | seeds | target accuracy | target macro-F1 | mean entropy | information max. | source accuracy |",
  "|---|---|---|---|---|---|---|---|",
  (group_by(.name) | .[]
    | "| \(.[0].direction) | \(.[0].method) | \(length) | "
      + ([map(.target_accuracy), map(.target_macro_f1), map(.mean_entropy), map(.information_maximization), map(.source_accuracy)]
         | map(pm) | join(" | ")) + " |")
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
