#!/usr/bin/env bash
# The measured distillation demo of docs/distillation.md, end to end:
#   1. the teacher: SmolLM2-135M-Instruct fine-tuned in full on tweet sentiment
#      (configs/teacher-tweets-full.toml);
#   2. the student: the teacher's 15-block copy (every second block), trained in full on the same
#      N_TRAIN tweets for one epoch, per seed, four ways: cross-entropy only (`graft train`), logit
#      KD (`graft distill`, forward KL, kd_ratio 0.5), hidden-state KD (cosine on three block
#      pairs, no logit term) and sequence-level KD (the teacher's greedy answers as the labels),
#      and logit KD again from a teacher cache (the teacher's top-64 log-probabilities on disk);
#   3. every model scored by label scoring on the 500 held-out tweets (`graft eval classify`).
# Results: OUT/results.jsonl (one line per model) and OUT/table.md (mean ± std over seeds).
# Usage: scripts/distill-demo.sh [OUT]    (GRAFT, SEEDS, N_TRAIN override the defaults)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/distill-demo}
SEEDS=${SEEDS:-"1 2 3"}
N_TRAIN=${N_TRAIN:-320}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"

# The tweets as chat files; the students' training set is the first N_TRAIN training lines.
build_once tweets "$OUT/data"
head -n "$N_TRAIN" "$OUT/data/chat.train.jsonl" > "$OUT/student.train.jsonl"
TEST="$OUT/data/chat.test.jsonl"

# Label-scoring accuracy of one model; appends {name, seed, accuracy, macro_f1, + run facts}.
score() { # NAME SEED MODEL [RUN_DIR]
    local json facts='{}'
    json=$("$GRAFT" eval classify --model "$3" --data "$TEST" --json)
    if [ -n "${4:-}" ]; then
        # Median tokens/s over the steps (the tokens of each batch, as metrics.jsonl counts them).
        facts=$(jq -c --argjson tps "$(jq -s 'map(.tokens_per_s) | sort | .[length / 2 | floor]' "$4/metrics.jsonl")" \
            '{steps, wall_time_s, peak_rss_mb, final_eval_loss, tokens_per_s: $tps}' "$4/summary.json")
    fi
    jq -cn --arg name "$1" --argjson seed "$2" --argjson eval "$json" --argjson facts "$facts" \
        '{name: $name, seed: $seed, accuracy: $eval.accuracy, macro_f1: $eval.macro_f1} + $facts' >> "$RESULTS"
}

# 1. The teacher, and the reference points: base model, teacher, untrained 15-block student.
if [ ! -e "$OUT/teacher/summary.json" ]; then
    "$GRAFT" train configs/teacher-tweets-full.toml --set output.dir="$OUT/teacher" --json > "$OUT/teacher.json"
fi
TEACHER="$OUT/teacher/model"
done_already base 0 || score base 0 smollm2-135m-instruct
done_already teacher 0 || score teacher 0 "$TEACHER" "$OUT/teacher"

# The same student settings for every condition: configs/distill-tweets.toml's, given to
# configs/student-15-blocks.toml (the same student for plain training) as overrides.
student=(--set model.name="$TEACHER" --set data.eval="$TEST" --set data.seq_len=160 --set train.eval_batches=4
    --set train.max_steps=$((N_TRAIN / 8)) --set train.batch_size=8 --set train.grad_accum=1 --set train.lr=1e-4
    --set train.warmup_steps=6 --set train.eval_every=0 --set train.save_every=0)
kd=(--set teacher.model="$TEACHER" --set data.train="$OUT/student.train.jsonl")

# 2. Sequence-level KD data: the teacher's greedy answers to the students' training prompts.
[ -e "$OUT/teacher-answers.jsonl" ] || "$GRAFT" data teacher-answers --model "$TEACHER" \
    --data "$OUT/student.train.jsonl" --out "$OUT/teacher-answers.jsonl" --max-new-tokens 8 >&2

for seed in $SEEDS; do
    run() { # NAME COMMAND CONFIG ARGS...
        local name=$1 cmd=$2 config=$3; shift 3
        done_already "$name" "$seed" && return
        "$GRAFT" "$cmd" "$config" "${student[@]}" --set train.seed="$seed" \
            --set output.dir="$OUT/$name-$seed" "$@" --json > "$OUT/$name-$seed.json"
        score "$name" "$seed" "$(jq -r .output "$OUT/$name-$seed/summary.json")" "$OUT/$name-$seed"
        rm -rf "$OUT/$name-$seed/checkpoints"   # optimizer state: not needed once scored
    }
    run ce train configs/student-15-blocks.toml --set data.train="$OUT/student.train.jsonl"
    run logit_kd distill configs/distill-tweets.toml "${kd[@]}"
    run hidden_kd distill configs/distill-tweets.toml "${kd[@]}" --set distill.kd_ratio=0 \
        --set 'distill.hidden_layers=[[9, 5], [19, 10], [29, 15]]' --set distill.hidden_loss=cosine
    run seq_kd train configs/student-15-blocks.toml --set data.train="$OUT/teacher-answers.jsonl"
    # Logit KD from the teacher cache (top-64 log-probabilities, filled by the first seed).
    run logit_kd_cached distill configs/distill-tweets.toml "${kd[@]}" --set distill.teacher_cache="$OUT/teacher-cache"
done

# 3. The table: mean ± sample std over seeds, and the share of the teacher-student gap closed.
jq -rs '
  def mean: add / length;
  def std: (mean as $m | if length > 1 then (map((. - $m) * (. - $m)) | add / (length - 1) | sqrt) else 0 end);
  def pm(f): (map(f) | "\(mean * 1000 | round / 1000) ± \(std * 1000 | round / 1000)");
  (map(select(.name == "teacher"))[0].accuracy) as $t
  | (map(select(.name == "ce")) | map(.accuracy) | mean) as $ce
  | group_by(.name) | map({name: .[0].name, n: length, acc: pm(.accuracy), f1: pm(.macro_f1),
      gap: (if .[0].name | test("_kd$") then "\(((map(.accuracy) | mean) - $ce) / ($t - $ce) * 100 | round) %" else "" end),
      tps: (if .[0].tokens_per_s then pm(.tokens_per_s) else "" end),
      rss: (if .[0].peak_rss_mb then pm(.peak_rss_mb) else "" end)})
  | (["| model | runs | accuracy | macro-F1 | gap closed | tokens/s | peak RSS MB |", "|---|---|---|---|---|---|---|"]
     + map("| \(.name) | \(.n) | \(.acc) | \(.f1) | \(.gap) | \(.tps) | \(.rss) |")) | .[]' "$RESULTS" | tee "$OUT/table.md"
