#!/usr/bin/env bash
# The measured label-efficiency report of docs/vision.md: a linear head on EfficientNet-Lite0
# (ImageNet) for Fashion-MNIST at several shares of the training labels (FRACTIONS, per class,
# drawn with the seed), four ways of training the backbone:
#   probe   frozen backbone, features computed once (train.unfreeze_top = 0)
#   top2    the head convolution and the seventh stage trained too (unfreeze_top = 2)
#   full    every layer trained (unfreeze_top = 9)
#   lora    LoRA r 8 on every 1x1 convolution
#   scratch the same architecture from random weights, every layer trained with batch
#           statistics (model.init = "random"), AdamW 1e-3 for the whole network
# Images at SIZE x SIZE, EPOCHS epochs of batches of 32, AdamW 1e-2 for the head (backbone units
# at a hundredth, LoRA at a tenth), scored on EVAL_LIMIT test images (the same draw for every
# run of a seed). Every setting was fixed before any run.
# Results: OUT/results.jsonl (one line per run), OUT/table.md (mean +- std over seeds) and
# OUT/report/ (`graft report --x label_fraction`: the same groups as Markdown, JSON and HTML
# with the label-efficiency curves, accuracy and macro-F1 against the share of labels).
# Usage: scripts/vision-label-demo.sh [OUT]   (GRAFT, SEEDS, FRACTIONS, METHODS, SIZE, EPOCHS,
#        EVAL_LIMIT override the defaults)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/vision-label-demo}
SEEDS=${SEEDS:-"1 2 3"}
FRACTIONS=${FRACTIONS:-"0.01 0.1 1.0"}
METHODS=${METHODS:-"probe top2 full lora scratch"}
SIZE=${SIZE:-64}
EPOCHS=${EPOCHS:-5}
EVAL_LIMIT=${EVAL_LIMIT:-2000}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
. "$(dirname "$0")/demo-lib.sh"

CONFIG="$OUT/base.toml"
cat > "$CONFIG" <<TOML
[data]
dataset = "fashion-mnist"
eval_limit = $EVAL_LIMIT

[input]
resize = $SIZE
crop = $SIZE

[head]
epochs = $EPOCHS
batch_size = 32
lr = 1e-2

[output]
dir = "unused"
TOML

backbone() { # METHOD: its settings, one per line
    case $1 in
        probe) echo "train.unfreeze_top=0" ;;
        top2) echo "train.unfreeze_top=2" ;;
        full) echo "train.unfreeze_top=9" ;;
        lora) echo "train.lora={ r = 8, alpha = 16.0 }" ;;
        scratch) printf '%s\n' 'model.init="random"' 'head.lr=1e-3' ;;
        *) echo "unknown method $1" >&2; return 1 ;;
    esac
}

for fraction in $FRACTIONS; do
    for seed in $SEEDS; do
        for method in $METHODS; do
            name="$method:$fraction"
            done_already "$name" "$seed" && continue
            dir="$OUT/$method-$fraction-$seed"
            sets=()
            while read -r setting; do sets+=(--set "$setting"); done < <(backbone "$method")
            "$GRAFT" vision train "$CONFIG" "${sets[@]}" --set "data.label_fraction=$fraction" \
                --set "data.seed=$seed" --set "head.seed=$seed" --set "output.dir=\"$dir\"" --json > "$dir.json"
            jq -c --arg name "$name" --argjson seed "$seed" --arg method "$method" --argjson fraction "$fraction" \
                '{name: $name, seed: $seed, method: $method, label_fraction: $fraction, train_examples,
                  trainable_params, accuracy: .test.accuracy, macro_f1: .test.macro_f1, train_s}' "$dir.json" >> "$RESULTS"
            rm -rf "$dir/checkpoints"
        done
    done
done

jq -L "$(dirname "$0")" -rs '
  include "stats";
  "| labels (share) | method | seeds | labelled images | trainable parameters | test accuracy | macro-F1 | training s |",
  "|---|---|---|---|---|---|---|---|",
  (group_by([.label_fraction, .method]) | .[]
    | "| \(.[0].label_fraction) | \(.[0].method) | \(length) | \(.[0].train_examples) | \(.[0].trainable_params) | "
      + ([map(.accuracy), map(.macro_f1)] | map(pm) | join(" | ")) + " | \(map(.train_s) | pm(0)) |")
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
(cd "$OUT" && "$GRAFT" report results.jsonl --by method,label_fraction --metric accuracy,macro_f1,train_s \
    --x label_fraction --title "Label efficiency on Fashion-MNIST: EfficientNet-Lite0 against scratch" --out report)
