#!/usr/bin/env bash
# The measured detection and segmentation report of docs/vision.md: EfficientNet-Lite0 under a
# CenterNet-style detector and an FCN-style segmenter (`graft vision detect` / `segment`), on
# scenes of Fashion-MNIST garments pasted on CANVAS x CANVAS canvases (1 to 3 items; TRAIN
# training scenes from the training items, TEST test scenes from the test items; the same scenes
# for every run), three backbones at the same budget:
#   frozen     pretrained, only the neck and head train
#   fine-tune  pretrained, every layer the heads read trains too (a tenth of the head's rate)
#   scratch    random weights, every layer trains (batch statistics)
# EPOCHS epochs of batches of 16, AdamW 1e-3; the seed draws the head (and a scratch backbone)
# and the order. Every setting was fixed before any run.
# Results: OUT/results.jsonl (one line per run) and OUT/table.md (mean +- std over seeds).
# Usage: scripts/vision-scenes-demo.sh [OUT]   (GRAFT, SEEDS, TASKS, METHODS, CANVAS, TRAIN, TEST,
#        EPOCHS override the defaults)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/vision-scenes-demo}
SEEDS=${SEEDS:-"1 2 3"}
TASKS=${TASKS:-"detect segment"}
METHODS=${METHODS:-"frozen fine-tune scratch"}
CANVAS=${CANVAS:-64}
TRAIN=${TRAIN:-500}
TEST=${TEST:-300}
EPOCHS=${EPOCHS:-4}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
. "$(dirname "$0")/demo-lib.sh"

CONFIG="$OUT/base.toml"
cat > "$CONFIG" <<TOML
[scenes]
dataset = "fashion-mnist"
canvas = $CANVAS
min_items = 1
max_items = 3
train = $TRAIN
test = $TEST

[train]
epochs = $EPOCHS
batch_size = 16
lr = 1e-3

[output]
dir = "unused"
TOML

backbone() { # METHOD
    case $1 in
        frozen) echo 'train.backbone="frozen"' ;;
        fine-tune) echo 'train.backbone="fine-tune"' ;;
        scratch) echo 'model.init="random"' ;;
        *) echo "unknown method $1" >&2; return 1 ;;
    esac
}

for task in $TASKS; do
    for seed in $SEEDS; do
        for method in $METHODS; do
            name="$task:$method"
            done_already "$name" "$seed" && continue
            dir="$OUT/$task-$method-$seed"
            "$GRAFT" vision "$task" "$CONFIG" --set "$(backbone "$method")" --set "train.seed=$seed" \
                --set "output.dir=\"$dir\"" --json > "$dir.json"
            jq -c --arg name "$name" --argjson seed "$seed" --arg method "$method" \
                '{name: $name, seed: $seed, task, method: $method, trainable_params, train_s,
                  final_loss: .epoch_losses[-1].loss, map50: .detection.map, miou: .segmentation.miou,
                  miou_objects: .segmentation.miou_objects, pixel_accuracy: .segmentation.pixel_accuracy}' \
                "$dir.json" >> "$RESULTS"
            rm -rf "$dir/checkpoints"
        done
    done
done

jq -L "$(dirname "$0")" -rs '
  include "stats";
  "| task | backbone | seeds | trainable parameters | mAP@0.5 | mIoU | mIoU (objects) | pixel accuracy | training s |",
  "|---|---|---|---|---|---|---|---|---|",
  (group_by(.name) | .[]
    | "| \(.[0].task) | \(.[0].method) | \(length) | \(.[0].trainable_params) | "
      + ([map(.map50 // empty), map(.miou // empty), map(.miou_objects // empty), map(.pixel_accuracy // empty)]
         | map(pm) | join(" | ")) + " | \(map(.train_s) | pm(0)) |")
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
