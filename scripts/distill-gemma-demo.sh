#!/usr/bin/env bash
# The cross-tokenizer part of the distillation demo (docs/distillation.md), after
# scripts/distill-demo.sh has run in the same OUT:
#   1. the tweets as prompt / completion pairs (Gemma-3-270M is a base model without a chat
#      template, so both models read the same plain prompt);
#   2. the teacher: Gemma-3-270M (262k-token SentencePiece vocabulary) with a LoRA adapter trained
#      on them (configs/lora-chat.toml's adapter and schedule, one pass);
#   3. the student: the SmolLM2 teacher's 15-block copy of scripts/distill-demo.sh, trained on the
#      same N_TRAIN pairs per seed three ways: cross-entropy only, Universal Logit Distillation
#      from the Gemma teacher (`distill.loss = "uld"`), and sequence-level KD (Gemma's answers);
#   4. every model scored by label scoring on the 500 held-out tweets.
# Results: OUT/gemma-results.jsonl and OUT/gemma-table.md.
# Usage: scripts/distill-gemma-demo.sh [OUT]    (GRAFT, SEEDS, N_TRAIN as in scripts/distill-demo.sh)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/distill-demo}
SEEDS=${SEEDS:-"1 2 3"}
N_TRAIN=${N_TRAIN:-320}
RESULTS="$OUT/gemma-results.jsonl"
TEACHER="$OUT/teacher/model"
[ -d "$TEACHER" ] || { echo "run scripts/distill-demo.sh $OUT first (it trains the SmolLM2 teacher)" >&2; exit 1; }

# 1. Prompt / completion pairs: the chat files' question, then "Answer:" on its own line.
for split in train test; do
    jq -c '{prompt: (.messages[1].content + "\n\nAnswer:\n"), completion: .messages[2].content}' \
        "$OUT/data/chat.$split.jsonl" > "$OUT/completion.$split.jsonl"
done
head -n "$N_TRAIN" "$OUT/completion.train.jsonl" > "$OUT/student.completion.jsonl"
TEST="$OUT/completion.test.jsonl"

score() { # NAME SEED MODEL ADAPTER RUN_DIR
    local json facts='{}' adapter=()
    [ -n "$4" ] && adapter=(--adapter "$4")
    json=$("$GRAFT" eval classify --model "$3" "${adapter[@]}" --format prompt_completion --data "$TEST" --json)
    [ -n "$5" ] && facts=$(jq -c '{steps, tokens, wall_time_s, peak_rss_mb, final_eval_loss}' "$5/summary.json")
    jq -cn --arg name "$1" --argjson seed "$2" --argjson eval "$json" --argjson facts "$facts" \
        '{name: $name, seed: $seed, accuracy: $eval.accuracy, macro_f1: $eval.macro_f1} + $facts' >> "$RESULTS"
}

# 2. The Gemma teacher.
GEMMA=gemma3-270m
if [ ! -e "$OUT/gemma-teacher/summary.json" ]; then
    "$GRAFT" train configs/lora-chat.toml --set model.name=$GEMMA --set data.format=prompt_completion \
        --set data.train="$OUT/completion.train.jsonl" --set data.seq_len=160 --set train.epochs=1 \
        --set train.batch_size=16 --set train.grad_accum=1 --set train.eval_every=0 --set train.save_every=50 \
        --set output.dir="$OUT/gemma-teacher" --json > "$OUT/gemma-teacher.json"
fi
done_already gemma_teacher 0 || score gemma_teacher 0 $GEMMA "$OUT/gemma-teacher/adapter" "$OUT/gemma-teacher"
done_already smollm2_teacher 0 || score smollm2_teacher 0 "$TEACHER" "" ""

[ -e "$OUT/gemma-answers.jsonl" ] || "$GRAFT" data teacher-answers --model $GEMMA --adapter "$OUT/gemma-teacher/adapter" \
    --format prompt_completion --data "$OUT/student.completion.jsonl" --out "$OUT/gemma-answers.jsonl" \
    --max-new-tokens 8 >&2

# 3. The students (the settings of scripts/distill-demo.sh).
student=(--set model.name="$TEACHER" --set data.format=prompt_completion --set data.eval="$TEST"
    --set data.seq_len=160 --set train.eval_batches=4 --set train.max_steps=$((N_TRAIN / 8)) --set train.batch_size=8
    --set train.grad_accum=1 --set train.lr=1e-4 --set train.warmup_steps=6 --set train.eval_every=0
    --set train.save_every=0)
for seed in $SEEDS; do
    run() { # NAME COMMAND CONFIG ARGS...
        local name=$1 cmd=$2 config=$3; shift 3
        done_already "$name" "$seed" && return
        "$GRAFT" "$cmd" "$config" "${student[@]}" --set train.seed="$seed" \
            --set output.dir="$OUT/$name-$seed" "$@" --json > "$OUT/$name-$seed.json"
        score "$name" "$seed" "$(jq -r .output "$OUT/$name-$seed/summary.json")" "" "$OUT/$name-$seed"
        rm -rf "$OUT/$name-$seed/checkpoints"   # optimizer state: not needed once scored
    }
    run pc_ce train configs/student-15-blocks.toml --set data.train="$OUT/student.completion.jsonl"
    run pc_uld distill configs/distill-tweets.toml --set data.train="$OUT/student.completion.jsonl" \
        --set teacher.model=$GEMMA --set teacher.adapter="$OUT/gemma-teacher/adapter" --set distill.loss=uld
    run pc_seq_kd train configs/student-15-blocks.toml --set data.train="$OUT/gemma-answers.jsonl"
done

jq -rs '
  def mean: add / length;
  def std: (mean as $m | if length > 1 then (map((. - $m) * (. - $m)) | add / (length - 1) | sqrt) else 0 end);
  def pm(f): (map(f) | "\(mean * 1000 | round / 1000) ± \(std * 1000 | round / 1000)");
  group_by(.name) | map({name: .[0].name, n: length, acc: pm(.accuracy), f1: pm(.macro_f1),
      loss: (if .[0].final_eval_loss then pm(.final_eval_loss) else "" end),
      rss: (if .[0].peak_rss_mb then pm(.peak_rss_mb / 1000) else "" end)})
  | (["| model | runs | accuracy | macro-F1 | held-out loss | peak RSS GB |", "|---|---|---|---|---|---|"]
     + map("| \(.name) | \(.n) | \(.acc) | \(.f1) | \(.loss) | \(.rss) |")) | .[]' "$RESULTS" | tee "$OUT/gemma-table.md"
