#!/usr/bin/env bash
# The measured encoder TAPT demo of docs/encoders.md ("Task-adaptive pretraining, measured"):
# does continued self-supervised training of all-MiniLM-L6-v2 on unlabelled tweets help a
# tweet-sentiment probe, and does it cost retrieval quality elsewhere?
#   data     `graft data build tweets` twice: the default build (2,000 training / 500 test
#            tweets) gives the probe's labelled files; a build with every other tweet as
#            training text (--train 1000000: the same 500 test tweets, checked) gives the
#            unlabelled corpus. Its last EVAL_TEXTS tweets are the pretraining runs' held-out
#            set, the rest their training texts; the 500 test tweets are never trained on.
#   base     the base encoder's probe (head seed = the seed) and retrieval scores, per seed: the
#            probe's head seed alone moves its accuracy by a few points, so every adapted
#            encoder is compared with the base under the same head seed.
#   per seed masked LM (`graft pretrain-mlm`) and unsupervised SimCSE (`graft pretrain-simcse`)
#            from the base encoder, STEPS steps each (default 20: what three seeds of both
#            and their scoring fit in about 40 minutes of a shared 2-core CPU under load),
#            train.seed = the seed; then the probe (head seed = the seed) and retrieval on
#            each exported encoder.
#   probe    `graft eval probe`: linear head (30 epochs, batch 32, AdamW 1e-2) on the frozen
#            embeddings of the 2,000 labelled training tweets, accuracy / macro-F1 on the 500
#            test tweets (labels negative / neutral / positive).
#   control  `graft eval retrieval --format summaries` on dataset:appstream/summarize.test.jsonl:
#            each AppStream description retrieves its one-line summary among all the test
#            summaries (recall@1/5/10, MRR).
# Pretraining settings, fixed before running (not tuned): texts up to 64 tokens, linear schedule
# with WARMUP warm-up steps, no evaluation during training (the held-out loss is measured before
# and after on EVAL_BATCHES batches), no checkpoints kept;
#   masked LM  batch 16, lr 5e-5, 15 % targets (80 % [MASK], 10 % random, 10 % kept), token masking;
#   SimCSE     batch 32, lr 3e-5, temperature 0.05, dropout 0.1.
# Results: OUT/results.jsonl (one line per encoder and seed) and OUT/table.md (mean +- std over
# seeds, and each adapted encoder minus the base with the same seed, then mean +- std); OUT/report/
# (scripts/domain-reports.sh).
# Usage: scripts/encoder-tapt-demo.sh [OUT]   (GRAFT, SEEDS, STEPS, WARMUP, EVAL_TEXTS,
#        EVAL_BATCHES override the defaults). Rerunning continues: finished lines are kept.
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/encoder-tapt-demo}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-$(( (STEPS + 9) / 10 ))}
EVAL_TEXTS=${EVAL_TEXTS:-256}
EVAL_BATCHES=${EVAL_BATCHES:-4}
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
DATA="$OUT/data"
RETRIEVAL_DATA=dataset:appstream/summarize.test.jsonl

# The data.
build_once tweets "$DATA/tweets"
build_once tweets "$DATA/tweets-all" --train 1000000
cmp -s "$DATA/tweets/text.test.jsonl" "$DATA/tweets-all/text.test.jsonl" \
    || { echo "the two tweet builds have different test tweets" >&2; exit 1; }
for split in train test; do
    jq -c '{text: .input, label: .output}' "$DATA/tweets/alpaca.$split.jsonl" > "$DATA/sentiment.$split.jsonl"
done
n_all=$(wc -l < "$DATA/tweets-all/text.train.jsonl")
head -n $((n_all - EVAL_TEXTS)) "$DATA/tweets-all/text.train.jsonl" > "$DATA/unlabelled.train.jsonl"
tail -n "$EVAL_TEXTS" "$DATA/tweets-all/text.train.jsonl" > "$DATA/unlabelled.eval.jsonl"


# Probes and retrieves with ENCODER and appends the line {name, seed, scores..., pretraining}.
score() { # NAME SEED ENCODER PRETRAINING_SUMMARY_JSON
    local name=$1 seed=$2 encoder=$3 pre=$4 stem="$OUT/$1-$2"
    "$GRAFT" eval probe --model "$encoder" --train "$DATA/sentiment.train.jsonl" --test "$DATA/sentiment.test.jsonl" \
        --seed "$seed" --json > "$stem.probe.json"
    "$GRAFT" eval retrieval --model "$encoder" --data "$RETRIEVAL_DATA" --format summaries --json > "$stem.retrieval.json"
    jq -cn --arg name "$name" --argjson seed "$seed" --slurpfile p "$stem.probe.json" \
        --slurpfile r "$stem.retrieval.json" --argjson pre "$pre" \
        '{name: $name, seed: $seed, accuracy: $p[0].accuracy, macro_f1: $p[0].macro_f1,
          n_train: $p[0].n_train, n_test: $p[0].n_test, retrieval_n: $r[0].n,
          recall_at_1: $r[0].recall_at_1, recall_at_5: $r[0].recall_at_5, recall_at_10: $r[0].recall_at_10,
          mrr: $r[0].mrr, pretraining: $pre}' >> "$RESULTS"
}

# Pretrains with COMMAND (pretrain-mlm or pretrain-simcse) and CONFIG, then scores the export.
adapt() { # NAME SEED COMMAND CONFIG
    local name=$1 seed=$2 command=$3 config=$4 dir="$OUT/$1-$2"
    done_already "$name" "$seed" && return
    if [ ! -e "$dir/summary.json" ] || [ ! -e "$dir/encoder/config.json" ]; then
        rm -rf "$dir"
        "$GRAFT" "$command" "$config" --set data.train="$DATA/unlabelled.train.jsonl" \
            --set data.eval="$DATA/unlabelled.eval.jsonl" --set train.seed="$seed" --set train.max_steps="$STEPS" \
            --set train.warmup_steps="$WARMUP" --set train.eval_every=0 --set train.save_every=0 \
            --set train.eval_batches="$EVAL_BATCHES" --set output.dir="$dir" --json > "$dir.json"
        rm -rf "$dir/checkpoints"
    fi
    score "$name" "$seed" "$dir/encoder" \
        "$(jq -c '{steps, units, wall_time_s, base_eval_loss, final_eval_loss, peak_rss_mb}' "$dir/summary.json")"
}

for seed in $SEEDS; do
    done_already base "$seed" || score base "$seed" all-minilm-l6-v2 null
    adapt mlm "$seed" pretrain-mlm "$SCRIPTS/../configs/mlm-tweets.toml"
    adapt simcse "$seed" pretrain-simcse "$SCRIPTS/../configs/simcse-tweets.toml"
done

jq -L "$SCRIPTS" -rs -f "$SCRIPTS/encoder-tapt-table.jq" "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
GRAFT="$GRAFT" "$(dirname "$0")/domain-reports.sh" encoder-tapt "$RESULTS" "$OUT/report"
