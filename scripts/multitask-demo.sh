#!/usr/bin/env bash
# The measured multitask demo of docs/multitask.md, end to end, on SmolLM2-135M-Instruct with one
# LoRA (r 16, alpha 32) and three tasks as chat turns:
#   sentiment  tweet sentiment (tweets, scored by label-scoring accuracy on the first N_ACC
#              held-out tweets, `graft eval classify`, and by held-out answer loss);
#   summaries  AppStream description -> one-line summary (held-out answer loss);
#   qa         AppStream questions on a component's text (held-out answer loss).
# Per seed:
#   1. single-task LoRAs: one run per task, STEPS steps of its task alone;
#   2. one multitask LoRA per {proportional, temperature 2, round-robin} x {equal, uncertainty}:
#      3 x STEPS steps of one task each; and one with PCGrad: STEPS steps of all three tasks (the
#      same number of micro-batches, so every run sees the same compute as the three singles;
#      the mixing does not enter PCGrad, which trains every task in every step);
#   3. the low-resource case: sentiment with LOW_N training tweets (10 % of its 2000), as a
#      single-task LoRA and in the three mixtures with equal weighting.
# Every held-out loss is the mean next-token loss over the answers of the first EVAL_BATCHES x 4
# examples of the task's test file (the same examples in every run, so differences are paired).
# Results: OUT/results.jsonl (one line per run) and OUT/table.md (mean +- std over seeds, and the
# negative-transfer table: multitask minus single-task, per seed, then mean +- std).
# Usage: scripts/multitask-demo.sh [OUT]   (GRAFT, SEEDS, STEPS, LR, LOW_N, N_ACC, EVAL_BATCHES,
#        MAX_DESCRIPTION_CHARS override the defaults)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/multitask-demo}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-16}
LR=${LR:-5e-4}
LOW_N=${LOW_N:-200}
N_ACC=${N_ACC:-200}
EVAL_BATCHES=${EVAL_BATCHES:-4}
MAX_DESCRIPTION_CHARS=${MAX_DESCRIPTION_CHARS:-600}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"

# The data: the tweets, and the AppStream files with descriptions of at most
# MAX_DESCRIPTION_CHARS characters (shorter sequences, faster steps).
build_once tweets "$OUT/data/tweets"
build_once appstream "$OUT/data/appstream" --max-description-chars "$MAX_DESCRIPTION_CHARS"
head -n "$LOW_N" "$OUT/data/tweets/chat.train.jsonl" > "$OUT/sentiment-low.train.jsonl"

task() { # NAME TRAIN EVAL
    printf '[[tasks]]\nname = "%s"\ndata = "%s"\neval = "%s"\nformat = "messages"\n\n' "$1" "$2" "$3"
}
SENTIMENT_EVAL="$OUT/data/tweets/chat.test.jsonl"
sentiment() { task sentiment "$OUT/data/tweets/chat.train.jsonl" "$SENTIMENT_EVAL"; }
sentiment_low() { task sentiment "$OUT/sentiment-low.train.jsonl" "$SENTIMENT_EVAL"; }
summaries() { task summaries "$OUT/data/appstream/summarize.train.jsonl" "$OUT/data/appstream/summarize.test.jsonl"; }
qa() { task qa "$OUT/data/appstream/qa.train.messages.jsonl" "$OUT/data/appstream/qa.test.messages.jsonl"; }

# One run's config: the shared settings, then the given tasks.
config() { # FILE TASK_FUNCTIONS...
    local file=$1; shift
    cat > "$file" <<EOF
[model]
name = "smollm2-135m-instruct"

[adapter]
kind = "lora"
r = 16
alpha = 32.0
dropout = 0.05

[data]
seq_len = 384

[train]
lr = $LR
batch_size = 4
grad_accum = 1
warmup_steps = 2
eval_every = 0
save_every = 0
eval_batches = $EVAL_BATCHES

EOF
    for t in "$@"; do "$t" >> "$file"; done
}

# Trains one run and appends its line: held-out loss per task, sentiment accuracy when the run
# trained sentiment, each task's final loss weight, and the run's facts.
run() { # NAME SEED STEPS MIXING WEIGHTING TASK_FUNCTIONS...
    local name=$1 seed=$2 steps=$3 mixing=$4 weighting=$5; shift 5
    done_already "$name" "$seed" && return
    local dir="$OUT/$name-$seed" cfg="$OUT/$name-$seed.toml" acc='null' mix=()
    config "$cfg" "$@"
    case $mixing in
        temperature) mix=(--set multitask.mixing=temperature --set multitask.t=2.0) ;;
        *) mix=(--set multitask.mixing="$mixing") ;;
    esac
    "$GRAFT" multitask "$cfg" "${mix[@]}" --set multitask.weighting="$weighting" --set train.seed="$seed" \
        --set train.max_steps="$steps" --set output.dir="$dir" --json > "$dir.json"
    if jq -e '.tasks | has("sentiment")' "$dir/summary.json" > /dev/null; then
        acc=$("$GRAFT" eval classify --adapter "$dir" --data "$SENTIMENT_EVAL" --limit "$N_ACC" --json | jq .accuracy)
    fi
    jq -c --arg name "$name" --argjson seed "$seed" --arg mixing "$mixing" --arg weighting "$weighting" \
        --argjson acc "$acc" \
        '{name: $name, seed: $seed, mixing: $mixing, weighting: $weighting, sentiment_accuracy: $acc,
          eval_loss: (.tasks | map_values(.eval_loss)), loss_weight: (.tasks | map_values(.loss_weight)),
          base_eval_loss, steps, wall_time_s, peak_rss_mb}' "$dir/summary.json" >> "$RESULTS"
    rm -rf "$dir/checkpoints"   # optimizer state: not needed once scored
}

# The base model's accuracy (its held-out losses are every single-task run's base_eval_loss).
if ! done_already base 0; then
    jq -cn --argjson acc "$("$GRAFT" eval classify --data "$SENTIMENT_EVAL" --limit "$N_ACC" --json | jq .accuracy)" \
        '{name: "base", seed: 0, sentiment_accuracy: $acc}' >> "$RESULTS"
fi

for seed in $SEEDS; do
    run single_sentiment "$seed" "$STEPS" proportional equal sentiment
    run single_summaries "$seed" "$STEPS" proportional equal summaries
    run single_qa "$seed" "$STEPS" proportional equal qa
    for mixing in proportional temperature round_robin; do
        run "mt_${mixing}_equal" "$seed" $((3 * STEPS)) "$mixing" equal sentiment summaries qa
        run "mt_${mixing}_uncertainty" "$seed" $((3 * STEPS)) "$mixing" uncertainty sentiment summaries qa
    done
    # PCGrad trains every task in every step, so the mixing does not enter: one run stands for
    # all three mixings.
    run mt_pcgrad "$seed" "$STEPS" proportional pcgrad sentiment summaries qa
    run low_single_sentiment "$seed" "$STEPS" proportional equal sentiment_low
    for mixing in proportional temperature round_robin; do
        run "low_mt_${mixing}_equal" "$seed" $((3 * STEPS)) "$mixing" equal sentiment_low summaries qa
    done
done

# The tables: mean +- sample std over seeds, and multitask minus single-task per seed.
jq -L "$(dirname "$0")" -rs -f "$(dirname "$0")/multitask-table.jq" "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
