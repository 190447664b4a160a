#!/usr/bin/env bash
# The measured Whisper adaptation of docs/speech.md ("Fine-tuning: what it measured").
#   zero-shot   tiny.en transcribes the held-out sentences of every language and English
#               (`graft transcribe --manifest`, greedy), scored by `graft speech score`; base's
#               zero-shot scores are the LoRA runs' scores before training (the same clips,
#               the same greedy decoding, each clip in its language);
#   LoRA per L  base with LoRA on every decoder projection, trained on language L's synthetic
#               speech (`graft speech train`), scored before and after on L's held-out sentences
#               (training voices), the same sentences in L's held-out voice, and English
#               held-out sentences (forgetting);
#   control     the same LoRA trained on English synthetic speech only, scored on every
#               language's held-out sentences: what "learning the voice" alone does;
#   new language  tiny.en (English-only) with the same LoRA trained on German.
# Data: `graft data build speech` (de, es, fr, it, pt) and an English build, seed 42.
# Encoder states are kept in OUT/encoder-cache (the encoder is frozen in every run), so each clip
# is encoded once per model across the runs.
# Results: OUT/results.jsonl (one line per run and scored manifest) and each run's summary.json.
# Usage: scripts/speech-lora-demo.sh [OUT]   (GRAFT, LANGS, TRAIN, TEST, EPOCHS, LR override)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/speech-demo}
LANGS=${LANGS:-"de es fr it pt"}
TRAIN=${TRAIN:-100}
TEST=${TEST:-40}
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
. "$(dirname "$0")/demo-lib.sh"

build_once speech "$OUT/data/speech" --languages "$(echo $LANGS | tr ' ' ',')"
build_once speech "$OUT/data/speech-en" --languages en
SPEECH="$OUT/data/speech"
EN="$OUT/data/speech-en"

# Zero-shot: each model on every language's held-out sentences (and voices), greedy.
zero_shot() { # MODEL MANIFEST TAG
    local hyp="$OUT/zero-shot/$1.$3.jsonl"
    [ -s "$hyp.score.json" ] && return
    mkdir -p "$OUT/zero-shot"
    "$GRAFT" transcribe --model "$1" --manifest "$2" --limit-per-language "$TEST" --beam-size 1 --json > "$hyp"
    "$GRAFT" speech score --manifest <(jq -c --slurpfile h "$hyp" 'select(.audio as $a | $h | any(.audio == $a))' "$2") \
        --hypotheses "$hyp" --json > "$hyp.score.json"
    jq -c --arg m "$1" --arg t "$3" '{name: "zero-shot", model: $m, set: $t, seed: 42,
        wer: .overall.wer, languages: (.languages | map_values({wer, wer_ci95, cer}))}' "$hyp.score.json" >> "$RESULTS"
}
zero_shot whisper-tiny-en "$SPEECH/test_sentences.jsonl" test_sentences
zero_shot whisper-tiny-en "$EN/test_sentences.jsonl" english

# One LoRA run: NAME MODEL TRAIN_MANIFEST TRAIN_LANG EVAL_MANIFEST SCORE_LANGS (toml list) SCORED (toml list)
lora_run() {
    local dir="$OUT/runs/$1"
    [ -s "$dir/summary.json" ] && return
    mkdir -p "$OUT/runs"
    cat > "$OUT/runs/$1.toml" <<EOF
[model]
name = "$2"

[data]
train = "$3"
eval = "$5"
languages = ["$4"]
score = $7
score_languages = $6
train_limit = $TRAIN
eval_limit = $TEST
encoder_cache = "$OUT/encoder-cache"

[adapter]
kind = "lora"
r = 16
alpha = 32.0
targets = ["decoder.*"]

[train]
epochs = $EPOCHS
batch_size = 8
lr = $LR
warmup_steps = 4
schedule = "cosine"
seed = 42

[output]
dir = "$dir"
EOF
    "$GRAFT" speech train "$OUT/runs/$1.toml" --json > "$dir.json"
    jq -c --arg n "$1" --arg l "$4" '. as $s | .scores | to_entries[] | {name: $n, seed: 42, trained_on: $l,
        model: $s.model, set: .key, before: .value.before.overall.wer, after: .value.after.overall.wer,
        before_ci95: .value.before.overall.wer_ci95, after_ci95: .value.after.overall.wer_ci95,
        languages: (.value as $v | $v.before.languages | keys | map(. as $k | {($k): {before: $v.before.languages[$k].wer,
            before_ci95: $v.before.languages[$k].wer_ci95, after: $v.after.languages[$k].wer,
            after_ci95: $v.after.languages[$k].wer_ci95}}) | add),
        train_s: $s.train_s, prepare_s: $s.prepare_s, score_s: $s.score_s, peak_rss_mb: $s.peak_rss_mb,
        trainable_params: $s.trainable_params, steps: $s.steps}' "$dir.json" >> "$RESULTS"
}

for lang in $LANGS; do
    lora_run "lora-$lang" whisper-base "$SPEECH/train.jsonl" "$lang" "$SPEECH/test_sentences.jsonl" \
        "[\"$lang\", \"en\"]" "[\"$SPEECH/test_voices.jsonl\", \"$EN/test_sentences.jsonl\"]"
done
all_langs=$(printf '"%s", ' $LANGS)
lora_run control-en whisper-base "$EN/train.jsonl" en "$EN/test_sentences.jsonl" \
    "[${all_langs%, }]" "[\"$SPEECH/test_sentences.jsonl\"]"
lora_run tiny-en-de whisper-tiny-en "$SPEECH/train.jsonl" de "$SPEECH/test_sentences.jsonl" \
    "[\"de\", \"en\"]" "[\"$SPEECH/test_voices.jsonl\", \"$EN/test_sentences.jsonl\"]"
echo "results in $RESULTS" >&2
