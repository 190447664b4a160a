#!/usr/bin/env bash
# The measured domain-adaptive pretraining report of docs/domain-adaptation.md: does continued
# pretraining on unlabelled AppStream descriptions pay off for a summarization LoRA trained on
# few labelled examples, and what does it cost on other text?
#
# SmolLM2-135M-Instruct throughout. The AppStream data is built with descriptions of at most
# MAX_DESCRIPTION_CHARS characters; components are split by a hash of their ID, so no test
# component's text enters any training stage.
#   1. Continued pretraining (once, seed 1): LoRA r 16 (alpha 32, all seven projections) on the
#      descriptions of the training components as plain text, packed 256-token windows, batch 4,
#      CPT_EPOCHS epochs, lr 2e-4 cosine with 5 warmup steps; once without and once with 20 %
#      general prose replayed (dataset:austen/text.train.jsonl, data.replay). Each is exported as
#      a merged Hugging Face folder, the model the second stage starts from. Each run's own
#      held-out loss is on the test components' descriptions (EVAL_BATCHES x 4 windows).
#   2. Forgetting: mean next-token loss of the base and both adapted models on held-out domain
#      text (the test components' descriptions), on the 500 held-out tweets (never trained on by
#      any stage) and on the held-out Austen chapters (the replay source's held-out part), each
#      the first GENERAL_CHARS characters, windows of 256 tokens (`graft eval perplexity`).
#   3. Task fine-tuning, per seed and per number of labels N in LABELS: N summarization pairs
#      drawn from the training components by the seed (the same N for every start), a fresh LoRA
#      r 16 (alpha 32, dropout 0.05) for one epoch at batch 4, lr 5e-4 with 2 warmup steps,
#      started from the base model and from the continued-pretraining model (without replay).
#      Scores: held-out answer loss (the first EVAL_BATCHES x 4 test pairs) and ROUGE-1/2/L F1 of
#      greedy summaries of the first N_EVAL test components (`graft eval summarize`). The
#      zero-label scores of both starting models are measured once.
# Every setting above was fixed before any run; none was tuned on the results.
# Results: OUT/results.jsonl (one line per run) and OUT/table.md (mean +- std over seeds, and the
# paired difference continued-pretraining start minus base start); OUT/report/ (scripts/domain-reports.sh).
# Usage: scripts/dapt-demo.sh [OUT]   (GRAFT, SEEDS, LABELS, CPT_EPOCHS, N_EVAL, EVAL_BATCHES,
#        GENERAL_CHARS, MAX_DESCRIPTION_CHARS, CPT_MAX_STEPS, FT_MAX_STEPS override the defaults;
#        the two MAX_STEPS cap a stage's steps, for a quick trial run)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/dapt-demo}
SEEDS=${SEEDS:-"1 2 3"}
LABELS=${LABELS:-"100 300"}
CPT_EPOCHS=${CPT_EPOCHS:-1}
N_EVAL=${N_EVAL:-100}
EVAL_BATCHES=${EVAL_BATCHES:-8}
GENERAL_CHARS=${GENERAL_CHARS:-40000}
MAX_DESCRIPTION_CHARS=${MAX_DESCRIPTION_CHARS:-600}
CPT_MAX_STEPS=${CPT_MAX_STEPS:-}
FT_MAX_STEPS=${FT_MAX_STEPS:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
DATA="$OUT/data/appstream"

# The data: AppStream pairs, the training components' descriptions as the unlabelled domain
# corpus, and the three held-out texts.
build_once appstream "$DATA" --max-description-chars "$MAX_DESCRIPTION_CHARS"
build_once tweets "$OUT/data/tweets"
build_once austen "$OUT/data/austen"
# (jq cuts the held-out texts itself: `head -c` would end jq with SIGPIPE under pipefail.)
description='.messages[0].content | split("\n\n")[1:] | join("\n\n")'
for split in train test; do
    jq -c "{text: ($description)} | select(.text != \"\")" "$DATA/summarize.$split.jsonl" > "$OUT/domain.$split.jsonl"
done
held_out() { # FILE FILTER OUT
    jq -rs --argjson n "$GENERAL_CHARS" "map($2) | join(\"\n\n\") | .[:\$n]" "$1" > "$3"
}
held_out "$DATA/summarize.test.jsonl" "$description" "$OUT/held-out.domain.txt"
held_out "$OUT/data/tweets/text.test.jsonl" .text "$OUT/held-out.tweets.txt"
held_out "$OUT/data/austen/text.test.jsonl" .text "$OUT/held-out.austen.txt"

steps_cap() { [ -n "$1" ] && printf -- '--set\ntrain.max_steps=%s\n' "$1"; return 0; }
loss_on() { # MODEL TEXT
    "$GRAFT" eval perplexity --model "$1" --text "$2" --window 256 --json | jq .mean_nll
}
rouge_of() { # MODEL [ADAPTER]
    local adapter=()
    [ -n "${2:-}" ] && adapter=(--adapter "$2")
    "$GRAFT" eval summarize --model "$1" "${adapter[@]}" --data "$DATA/summarize.test.jsonl" --limit "$N_EVAL" --json \
        | jq -c '{rouge1, rouge2, rougeL, n}'
}

# Stage 1: continued pretraining, without and with replay; exported merged.
cpt() { # NAME REPLAY(0|1)
    local name=$1 dir="$OUT/$1" replay=''
    [ -e "$dir-merged/config.json" ] && return
    [ "$2" = 1 ] && replay='replay = { path = "dataset:austen/text.train.jsonl", share = 0.2 }'
    cat > "$dir.toml" <<EOF
[model]
name = "smollm2-135m-instruct"

[adapter]
kind = "lora"
r = 16
alpha = 32.0
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[data]
train = "$OUT/domain.train.jsonl"
eval = "$OUT/domain.test.jsonl"
format = "text"
seq_len = 256
packing = true
$replay

[train]
epochs = $CPT_EPOCHS
lr = 2e-4
batch_size = 4
schedule = "cosine"
warmup_steps = 5
eval_every = 0
save_every = 0
eval_batches = $EVAL_BATCHES
seed = 1

[output]
dir = "$dir"
EOF
    mapfile -t cap < <(steps_cap "$CPT_MAX_STEPS")
    "$GRAFT" train "$dir.toml" "${cap[@]}" --json > "$dir.json"
    "$GRAFT" export "$dir" --format merged --out "$dir-merged" --json > "$dir-merged.json"
    rm -rf "$dir/checkpoints"
}
cpt cpt 0
cpt cpt_replay 1

# Forgetting: every starting model on the three held-out texts.
for m in base cpt cpt_replay; do
    done_already "forgetting_$m" 0 && continue
    model=smollm2-135m-instruct
    [ "$m" != base ] && model="$OUT/$m-merged"
    jq -cn --arg name "forgetting_$m" --argjson d "$(loss_on "$model" "$OUT/held-out.domain.txt")" \
        --argjson t "$(loss_on "$model" "$OUT/held-out.tweets.txt")" \
        --argjson a "$(loss_on "$model" "$OUT/held-out.austen.txt")" \
        '{name: $name, seed: 0, loss: {domain: $d, tweets: $t, austen: $a}}' >> "$RESULTS"
done

# Zero labels: both starting models summarize as they are.
for m in base cpt; do
    done_already "zero_$m" 0 && continue
    model=smollm2-135m-instruct
    [ "$m" != base ] && model="$OUT/$m-merged"
    jq -cn --arg name "zero_$m" --arg start "$m" --argjson r "$(rouge_of "$model")" \
        '{name: $name, seed: 0, start: $start, labels: 0} + $r' >> "$RESULTS"
done

# Stage 2: a fresh summarization LoRA on N labelled pairs, from each start.
finetune() { # SEED N START
    local seed=$1 n=$2 start=$3 name="ft_$3_$2" model=smollm2-135m-instruct
    done_already "$name" "$seed" && return
    [ "$start" != base ] && model="$OUT/$start-merged"
    local dir="$OUT/$name-$seed" train="$OUT/labels-$n-$seed.jsonl"
    [ -e "$train" ] || shuf -n "$n" --random-source=<(yes "$seed") "$DATA/summarize.train.jsonl" > "$train"
    cat > "$dir.toml" <<EOF
[model]
name = "$model"

[adapter]
kind = "lora"
r = 16
alpha = 32.0
dropout = 0.05

[data]
train = "$train"
eval = "$DATA/summarize.test.jsonl"
format = "messages"
seq_len = 384

[train]
epochs = 1
lr = 5e-4
batch_size = 4
warmup_steps = 2
eval_every = 0
save_every = 0
eval_batches = $EVAL_BATCHES
seed = $seed

[output]
dir = "$dir"
EOF
    mapfile -t cap < <(steps_cap "$FT_MAX_STEPS")
    "$GRAFT" train "$dir.toml" "${cap[@]}" --json > "$dir.json"
    jq -c --arg name "$name" --argjson seed "$seed" --arg start "$start" --argjson n "$n" \
        --argjson r "$(rouge_of "$model" "$dir")" \
        '{name: $name, seed: $seed, start: $start, labels: $n, eval_loss: .final_eval_loss,
          base_eval_loss, steps, wall_time_s, peak_rss_mb} + $r' "$dir/summary.json" >> "$RESULTS"
    rm -rf "$dir/checkpoints"
}
# Every seed of the smallest label budget first, so a cut-short run has whole rows.
for n in $LABELS; do
    for seed in $SEEDS; do
        for start in base cpt; do finetune "$seed" "$n" "$start"; done
    done
done

jq -L "$(dirname "$0")" -rs -f "$(dirname "$0")/dapt-table.jq" "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
GRAFT="$GRAFT" "$(dirname "$0")/domain-reports.sh" dapt "$RESULTS" "$OUT/report"
