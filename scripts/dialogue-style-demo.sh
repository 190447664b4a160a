#!/usr/bin/env bash
# The measured character voice of docs/games.md: SmolLM2-135M-Instruct with one LoRA trained on
# conversational turns from Jane Austen's novels (dataset austen-dialogue: a line as the user's
# message, the next paragraph's speech as the reply; every 10th chapter held out), judged by
#   1. a style probe: a linear head on frozen all-MiniLM-L6-v2 embeddings (`graft eval probe`)
#      trained to tell Austen's dialogue lines ("austen": lines.train.jsonl) from modern English
#      ("other": tweets and AppStream component descriptions, half each), PROBE_TRAIN /
#      PROBE_TEST texts per class, every text cut to PROBE_CHARS characters; its held-out
#      accuracy (held-out chapters, the tweets' and AppStream's test splits) is reported, then
#      it labels the generated replies: the share judged Austen and the mean P(austen);
#   2. replies to fixed prompts: N_AUSTEN lines drawn evenly from the held-out chapters' turns
#      plus the five modern lines below, each answered greedily (`graft generate --chat`, at most
#      MAX_NEW tokens) by the base model, by the base model told to speak as an Austen character
#      (a system message, below), and by the LoRA;
#   3. held-out dialogue loss: the training run's own evaluation, before the first step (base)
#      and after the last (LoRA), on EVAL_TURNS turns drawn evenly from the held-out chapters
#      (the replies' tokens are scored);
#   4. forgetting: perplexity on general text the run never saw (the first GENERAL_CHARS
#      characters of AppStream component descriptions, 256-token windows), base and LoRA;
#   5. the adapter exported as a GGUF LoRA with its Ollama Modelfile (`graft export --format
#      gguf-lora`), read back and checked by graft.
# LoRA settings (fixed before the run, not tuned): r 16, alpha 32, dropout 0.05 on all seven
# projections, STEPS steps of batch BATCH, learning rate LR with a cosine schedule and 5 warmup
# steps, seed SEED.
# Results: OUT/results.json (everything measured), OUT/replies/*.jsonl (every reply),
# OUT/table.md, OUT/export/ (adapter GGUF + Modelfile). Finished steps are skipped on rerun.
# Usage: scripts/dialogue-style-demo.sh [OUT]   (GRAFT, SEED, STEPS, BATCH, LR, MAX_NEW, N_AUSTEN,
#        EVAL_TURNS, GENERAL_CHARS, PROBE_SEED, PROBE_TRAIN, PROBE_TEST, PROBE_CHARS override)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/dialogue-style}
SEED=${SEED:-1}
STEPS=${STEPS:-40}
BATCH=${BATCH:-8}
LR=${LR:-5e-4}
MAX_NEW=${MAX_NEW:-60}
N_AUSTEN=${N_AUSTEN:-15}
EVAL_TURNS=${EVAL_TURNS:-160}
GENERAL_CHARS=${GENERAL_CHARS:-20000}
PROBE_SEED=${PROBE_SEED:-1}
PROBE_TRAIN=${PROBE_TRAIN:-600}
PROBE_TEST=${PROBE_TEST:-200}
PROBE_CHARS=${PROBE_CHARS:-300}
MODERN=(
    "Hello! How are you today?"
    "Are you coming to the party on Saturday?"
    "I think he likes you, you know."
    "What do you think of the new neighbours?"
    "I'm sorry, I forgot to call you back yesterday."
)
CHARACTER="You are a character in a novel by Jane Austen. Reply to what is said to you in one short \
speech, in the voice of the novel."
mkdir -p "$OUT/replies"
OUT=$(cd "$OUT" && pwd)
START=$SECONDS
DATA="$OUT/data/dialogue"
build_once austen-dialogue "$DATA"
build_once tweets "$OUT/data/tweets"
build_once appstream "$OUT/data/appstream"

# Held-out turns scored by the run, the prompts, general text and the probe's data.
jq -cs --argjson n "$EVAL_TURNS" '. as $all | range(0; $n) | $all[(. * ($all | length) / $n | floor)]' \
    "$DATA/chat.test.jsonl" > "$OUT/heldout.jsonl"
{
    jq -c '{text: .messages[0].content}' "$DATA/chat.test.jsonl" | spread "$N_AUSTEN" austen 10000 |
        jq -c '{prompt: .text, kind: "austen"}'
    printf '%s\n' "${MODERN[@]}" | jq -Rc '{prompt: ., kind: "modern"}'
} > "$OUT/prompts.jsonl"
descriptions "$OUT/data/appstream/summarize.test.jsonl" |
    jq -rs --argjson n "$GENERAL_CHARS" 'map(.text) | join("\n") | .[:$n]' > "$OUT/general.txt"
for split in train test; do
    if [ "$split" = train ]; then n=$PROBE_TRAIN; else n=$PROBE_TEST; fi
    half=$((n / 2))
    {
        spread "$n" austen "$PROBE_CHARS" < "$DATA/lines.$split.jsonl"
        descriptions "$OUT/data/appstream/summarize.$split.jsonl" | spread "$half" other "$PROBE_CHARS"
        spread $((n - half)) other "$PROBE_CHARS" < "$OUT/data/tweets/text.$split.jsonl"
    } > "$OUT/probe.$split.jsonl"
done

# Training: the run's evaluation is the held-out dialogue loss, base before step 1, LoRA after.
RUN="$OUT/lora"
if [ ! -e "$RUN/summary.json" ]; then
    cat > "$OUT/dialogue.toml" <<EOF
[model]
name = "smollm2-135m-instruct"

[adapter]
kind = "lora"
r = 16
alpha = 32.0
dropout = 0.05
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[data]
train = "$DATA/chat.train.jsonl"
eval = "$OUT/heldout.jsonl"
format = "messages"
seq_len = 256

[train]
seed = $SEED
max_steps = $STEPS
lr = $LR
batch_size = $BATCH
grad_accum = 1
schedule = "cosine"
warmup_steps = 5
eval_every = 0
save_every = 0
eval_batches = 0

[output]
dir = "$RUN"
EOF
    "$GRAFT" train "$OUT/dialogue.toml" --json > "$OUT/train.json"
    rm -rf "$RUN/checkpoints"
fi

reply() { # ARM GRAFT_ARGS...: every prompt answered greedily, OUT/replies/ARM.jsonl
    local arm=$1 file="$OUT/replies/$1.jsonl" prompt kind start=$SECONDS
    shift
    [ -e "$file" ] && return
    : > "$file.part"
    while IFS=$'\t' read -r kind prompt; do
        "$GRAFT" generate --chat "$@" --prompt "$prompt" --max-new-tokens "$MAX_NEW" --json < /dev/null |
            jq -c --arg p "$prompt" --arg k "$kind" '{prompt: $p, kind: $k, text, new_tokens, stop_reason}' >> "$file.part"
    done < <(jq -r '[.kind, .prompt] | @tsv' "$OUT/prompts.jsonl")
    mv "$file.part" "$file"
    echo "$arm: $(wc -l < "$file") replies in $((SECONDS - start)) s" >&2
}
reply base
reply base-character --system "$CHARACTER"
reply lora --adapter "$RUN"

probe() { # ARM: the probe trained on probe.train, tested on probe.test, labelling ARM's replies
    local arm=$1
    [ -e "$OUT/probe-$arm.json" ] && return
    jq -c '{text}' "$OUT/replies/$arm.jsonl" > "$OUT/replies/$arm.text.jsonl"
    "$GRAFT" eval probe --model all-minilm-l6-v2 --train "$OUT/probe.train.jsonl" --test "$OUT/probe.test.jsonl" \
        --score "$OUT/replies/$arm.text.jsonl" --seed "$PROBE_SEED" --json > "$OUT/probe-$arm.json.part"
    mv "$OUT/probe-$arm.json.part" "$OUT/probe-$arm.json"
}
for arm in base base-character lora; do probe "$arm"; done

general() { # NAME GRAFT_ARGS...: perplexity of general.txt
    [ -e "$OUT/general-$1.json" ] && return
    local name=$1
    shift
    "$GRAFT" eval perplexity "$@" --text "$OUT/general.txt" --window 256 --json > "$OUT/general-$name.json"
}
general base
general lora --adapter "$RUN"

if [ ! -e "$OUT/export.json" ]; then
    "$GRAFT" export "$RUN" --format gguf-lora --out "$OUT/export/austen-voice.gguf" --json > "$OUT/export.json"
fi
[ -s "$OUT/export/Modelfile" ] || { echo "no Modelfile beside the exported adapter" >&2; exit 1; }

# results.json: the settings and every number; table.md: the same as Markdown.
COUNTS=$(for f in "$DATA"/*.jsonl; do jq -n --arg f "${f##*/}" --argjson n "$(wc -l < "$f")" '{($f): $n}'; done | jq -sc add)
jq -n --slurpfile train "$RUN/summary.json" --slurpfile gb "$OUT/general-base.json" \
    --slurpfile gl "$OUT/general-lora.json" --slurpfile ex "$OUT/export.json" \
    --slurpfile pb "$OUT/probe-base.json" --slurpfile pc "$OUT/probe-base-character.json" \
    --slurpfile pl "$OUT/probe-lora.json" --argjson data "$COUNTS" \
    --argjson steps "$STEPS" --argjson batch "$BATCH" --arg lr "$LR" --argjson seed "$SEED" \
    --argjson max_new "$MAX_NEW" --argjson probe_seed "$PROBE_SEED" --arg character "$CHARACTER" --argjson secs $((SECONDS - START)) '
    def arm($p): {judged_austen: ($p.score.predicted_share.austen // 0), mean_p_austen: $p.score.mean_probability.austen,
                  n: $p.score.n};
    $train[0] as $t
    | {settings: {model: "smollm2-135m-instruct", lora: {r: 16, alpha: 32, dropout: 0.05, targets: "all seven projections"},
                  steps: $steps, batch_size: $batch, lr: $lr, seed: $seed, probe_seed: $probe_seed,
                  max_new_tokens: $max_new,
                  character_system: $character},
       data: $data,
       probe: {accuracy: $pb[0].accuracy, macro_f1: $pb[0].macro_f1, n_train: $pb[0].n_train, n_test: $pb[0].n_test},
       replies: {base: arm($pb[0]), base_character: arm($pc[0]), lora: arm($pl[0])},
       heldout_dialogue: {base_loss: $t.base_eval_loss, lora_loss: $t.final_eval_loss,
                          base_ppl: ($t.base_eval_loss | exp), lora_ppl: ($t.final_eval_loss | exp)},
       general_text: {base_ppl: $gb[0].ppl, lora_ppl: $gl[0].ppl, tokens: $gb[0].n_predicted},
       training: {trainable_params: $t.trainable_params, steps: $t.steps, tokens: $t.tokens,
                  wall_time_s: $t.wall_time_s, peak_rss_mb: $t.peak_rss_mb},
       export: {path: $ex[0].path, modelfile: $ex[0].modelfile, max_abs_logit_diff: $ex[0].max_abs_logit_diff,
                top1_agreement: $ex[0].top1_agreement},
       script_wall_time_s: $secs}' > "$OUT/results.json"
jq -L "$HERE" -r '
  include "stats";
  def row($name; $r): "| \($name) | \($r.n) | \($r.judged_austen | fmt(2)) | \($r.mean_p_austen | fmt) |";
  "Style probe (all-MiniLM-L6-v2, linear head, seed \(.settings.probe_seed)): held-out accuracy \(.probe.accuracy | fmt), macro-F1 \(.probe.macro_f1 | fmt) (\(.probe.n_test) test texts).",
  "",
  "| replies of | n | judged Austen (share) | mean P(austen) |",
  "|---|---|---|---|",
  row("base"; .replies.base), row("base + character system message"; .replies.base_character), row("LoRA"; .replies.lora),
  "",
  "| | base | LoRA |",
  "|---|---|---|",
  "| held-out dialogue loss (perplexity) | \(.heldout_dialogue.base_loss | fmt) (\(.heldout_dialogue.base_ppl | fmt(2))) | \(.heldout_dialogue.lora_loss | fmt) (\(.heldout_dialogue.lora_ppl | fmt(2))) |",
  "| general-text perplexity (\(.general_text.tokens) tokens) | \(.general_text.base_ppl | fmt(2)) | \(.general_text.lora_ppl | fmt(2)) |",
  "",
  "Training: \(.training.steps) steps of batch \(.settings.batch_size) (\(.training.tokens) tokens), \(.training.trainable_params) trainable weights, \(.training.wall_time_s | fmt(0)) s; whole script \(.script_wall_time_s) s."
' "$OUT/results.json" > "$OUT/table.md"
cat "$OUT/table.md"
