#!/usr/bin/env bash
# The measured progressive-network comparison of docs/multitask.md: three tweet tasks learned in
# sequence (sentiment in 3 classes, then polarity of the non-neutral tweets, then neutral vs
# opinion) by `graft features progressive` with two kinds of column on all-MiniLM-L6-v2:
#   heads   MLP heads on the frozen sentence embeddings ([head] defaults)
#   blocks  copies of the encoder's top 2 blocks with lateral adapters ([encoder_columns] defaults)
# and, as the reference for what the lateral connections bring, every task learned alone (a
# network of one column, same settings and seed; the first task alone is the progressive run's
# first column, so it is not run again). Per seed: the accuracy matrix of each run.
# Data: the tweets asset, 600 training and 300 held-out tweets (seed 0), the later tasks on
# their subsets of the same split.
# Results: OUT/results.jsonl (one line per run and task: accuracy right after learning the task
# and after the last task, the column's trainable weights) and OUT/report/ (`graft report`:
# per columns kind, mode and task, and each progressive column minus the same task learned alone).
# With DATA=images, the same comparison on three image tasks learned in sequence (Fashion-MNIST,
# then MNIST-5k, then the 8x8 digits; PER_CLASS training and TEST_PER_CLASS test images of each
# class, at 64 x 64) on EfficientNet-Lite0 with two kinds of column:
#   heads   MLP heads on the frozen pooled features ([head] defaults)
#   units   copies of the network's top 2 units (seventh stage, head convolution) with lateral
#           adapters ([cnn_columns] defaults)
# Usage: scripts/progressive-demo.sh [OUT]   (GRAFT, SEEDS, TRAIN, TEST, DATA, PER_CLASS,
#        TEST_PER_CLASS, KINDS override)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/progressive-demo}
SEEDS=${SEEDS:-"1 2 3"}
TRAIN=${TRAIN:-600}
TEST=${TEST:-300}
DATA=${DATA:-tweets}
PER_CLASS=${PER_CLASS:-100}
TEST_PER_CLASS=${TEST_PER_CLASS:-50}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"

if [ "$DATA" = images ]; then
    KINDS=${KINDS:-"heads units"}
    LATER="mnist digits"
    image_task() { # NAME SET
        printf '[[tasks]]\nname = "%s"\nimages = "%s"\ntrain_per_class = %s\neval_per_class = %s\nimage_size = 64\n\n' \
            "$1" "$2" "$PER_CLASS" "$TEST_PER_CLASS"
    }
    config() { # FILE TASK...
        local file=$1; shift
        printf '[backbone]\nencoder = "efficientnet-lite0"\n\n' > "$file"
        for t in "$@"; do
            case $t in
                fashion) image_task fashion fashion-mnist ;;
                mnist) image_task mnist mnist-5k ;;
                digits) image_task digits digits-8x8 ;;
            esac >> "$file"
        done
        printf '[output]\ndir = "unused"\n' >> "$file"
    }
    config "$OUT/all.toml" fashion mnist digits
else
    KINDS=${KINDS:-"heads blocks"}
    LATER="polarity subjective"
    build_once tweets "$OUT/data/tweets" --train "$TRAIN" --test "$TEST" --seed 0
    TASKS="$OUT/tasks"
    mkdir -p "$TASKS"
    for split in train test; do
        src="$OUT/data/tweets/alpaca.$split.jsonl"
        jq -c '{text: .input, label: .output}' "$src" > "$TASKS/sentiment.$split.jsonl"
        jq -c 'select(.output != "neutral") | {text: .input, label: .output}' "$src" > "$TASKS/polarity.$split.jsonl"
        jq -c '{text: .input, label: (if .output == "neutral" then "neutral" else "opinion" end)}' "$src" \
            > "$TASKS/subjective.$split.jsonl"
    done
    config() { # FILE TASK...
        local file=$1; shift
        : > "$file"
        for t in "$@"; do
            printf '[[tasks]]\nname = "%s"\ntrain = "%s/%s.train.jsonl"\neval = "%s/%s.test.jsonl"\n\n' \
                "$t" "$TASKS" "$t" "$TASKS" "$t" >> "$file"
        done
        printf '[output]\ndir = "unused"\n' >> "$file"
    }
    config "$OUT/all.toml" sentiment polarity subjective
fi
# Alone, the first task is the progressive run's first column exactly: only the later ones.
for t in $LATER; do config "$OUT/alone-$t.toml" "$t"; done

run() { # COLUMNS MODE SEED CONFIG ARGS...
    local columns=$1 mode=$2 seed=$3 cfg=$4; shift 4
    local name="$columns-$(basename "$cfg" .toml)"
    done_already "$name" "$seed" && return
    local dir="$OUT/runs/$name-$seed"
    rm -rf "$dir"
    mkdir -p "$OUT/runs"
    "$GRAFT" features progressive "$cfg" --set output.dir="$dir" "$@" --json > "$dir.json"
    jq -c --arg name "$name" --arg columns "$columns" --arg mode "$mode" --argjson seed "$seed" '
        . as $s | range(0; $s.tasks | length) as $i
        | {name: $name, columns: $columns, mode: $mode, seed: $seed, task: $s.tasks[$i].name,
           after_own: $s.accuracy[$i][$i], after_last: $s.accuracy[-1][$i],
           column_params: $s.tasks[$i].column_params}' "$dir.json" >> "$RESULTS"
    rm -f "$dir/progressive.safetensors"   # scored: the weights are not needed any more
}

for seed in $SEEDS; do
    for kind in $KINDS; do
        case $kind in
            heads) args=(--set "head.seed=$seed") ;;
            blocks) args=(--set "encoder_columns.seed=$seed") ;;
            units) args=(--set "cnn_columns.seed=$seed") ;;
        esac
        run "$kind" progressive "$seed" "$OUT/all.toml" "${args[@]}"
        for t in $LATER; do run "$kind" alone "$seed" "$OUT/alone-$t.toml" "${args[@]}"; done
    done
done

if [ "$DATA" = images ]; then
    title="Progressive networks on three image tasks: MLP-head columns and CNN-unit columns on EfficientNet-Lite0"
else
    title="Progressive networks on three tweet tasks: MLP-head columns and encoder-block columns"
fi
"$GRAFT" report "$RESULTS" --by columns,mode,task --metric after_own,after_last --against mode=alone \
    --title "$title" --out "$OUT/report"
