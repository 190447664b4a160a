#!/usr/bin/env bash
# The measured style adaptation of docs/domain-adaptation.md: SmolLM2-135M-Instruct with one LoRA
# (r 16, alpha 32, dropout 0.05, all seven projections of every block) trained on Jane Austen's
# novels as plain text (dataset:austen, every 10th chapter held out), packed 256-token windows,
# batch 4, STEPS steps (cosine schedule, 3 warmup steps, learning rate LR: the settings of the
# project's short LoRA runs, as scripts/multitask-demo.sh, fixed before any run and not tuned).
# Per seed:
#   1. train; the run's own evaluation is the held-out Austen loss of the base model (before the
#      first step) and of the adapted one, on the same windows: the first EVAL_PASSAGES passages
#      of every novel's held-out chapters, packed into 256-token windows, all of them scored;
#   2. sample: N_SAMPLES continuations of MAX_NEW tokens for each of five fixed, neutral prompts
#      (written here, not taken from the novels), as raw text (no chat template), temperature 0.8,
#      top-p 0.95, generation seed 1000 x run seed + sample; the base model is sampled once, with
#      the first run seed's generation seeds, so every adapted sample of that seed has a base
#      sample from the same prompt and seed;
#   3. the style probe (PROBE=1; PROBE=0 skips it; by default it runs when the graft binary has
#      `graft eval probe`): a classifier on all-MiniLM-L6-v2 embeddings
#      trained to tell Austen ("austen": training passages; test: held-out chapters) from modern
#      English ("other": AppStream component descriptions and tweets, half each; test: their test
#      splits), PROBE_TRAIN / PROBE_TEST texts per class, every text cut to its first PROBE_CHARS
#      characters (about the samples' length), then scoring the generated continuations (without
#      their prompts): the share judged Austen and the mean P(austen).
# Results: OUT/results.jsonl (one line per step: train, samples, probe), OUT/samples/*.jsonl (the
# generated texts), OUT/table.md (mean +- std over seeds) and OUT/report/ (scripts/domain-reports.sh).
# Finished steps are skipped on rerun, so `PROBE=1` after a `PROBE=0` run only adds the probe.
# Usage: scripts/style-demo.sh [OUT]   (GRAFT, SEEDS, STEPS, LR, N_SAMPLES, MAX_NEW, PROBE,
#        PROBE_SEED, PROBE_TRAIN, PROBE_TEST, PROBE_CHARS, EVAL_PASSAGES override the defaults)
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/style-demo}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-15}
LR=${LR:-5e-4}
N_SAMPLES=${N_SAMPLES:-2}
MAX_NEW=${MAX_NEW:-80}
PROBE=${PROBE:-auto}
PROBE_SEED=${PROBE_SEED:-1}
PROBE_TRAIN=${PROBE_TRAIN:-600}
PROBE_TEST=${PROBE_TEST:-200}
PROBE_CHARS=${PROBE_CHARS:-400}
EVAL_PASSAGES=${EVAL_PASSAGES:-8}
R=16
ALPHA=32.0
PROMPTS=(
    "The letter arrived on a wet Tuesday morning, and"
    "When the family sat down to dinner that evening,"
    "She had not expected to see him again so soon, but"
    "The house at the end of the lane had been empty for a year, and"
    "After the meeting, the two friends walked home together and"
)
mkdir -p "$OUT/samples"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
read -r FIRST_SEED _ <<< "$SEEDS"

# The data: the novels (training passages and held-out chapters), and for the probe's "other"
# class the AppStream descriptions and the tweets.
build_once austen "$OUT/data/austen"

# The held-out evaluation file: the first EVAL_PASSAGES passages of each novel's held-out chapters.
HELDOUT="$OUT/heldout.jsonl"
jq -cs --argjson k "$EVAL_PASSAGES" 'group_by(.novel) | map(.[:$k]) | add | .[] | {text}' \
    "$OUT/data/austen/text.test.jsonl" > "$HELDOUT"

CONFIG="$OUT/style.toml"
cat > "$CONFIG" <<EOF
[model]
name = "smollm2-135m-instruct"

[adapter]
kind = "lora"
r = $R
alpha = $ALPHA
dropout = 0.05
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[data]
train = "dataset:austen/text.train.jsonl"
eval = "$HELDOUT"
format = "text"
seq_len = 256
packing = true

[train]
lr = $LR
batch_size = 4
grad_accum = 1
schedule = "cosine"
warmup_steps = 3
eval_every = 0
save_every = 0
eval_batches = 0
EOF


train() { # SEED
    local seed=$1 dir="$OUT/lora-$1"
    done_already train "$seed" model lora && return
    "$GRAFT" train "$CONFIG" --set train.seed="$seed" --set train.max_steps="$STEPS" \
        --set output.dir="$dir" --json > "$dir.json"
    jq -c --argjson seed "$seed" --arg lr "$LR" --argjson r "$R" --argjson alpha "$ALPHA" \
        '{name: "train", model: "lora", seed: $seed, lr: $lr, r: $r, alpha: $alpha, trainable_params,
          base_eval_loss, final_eval_loss, steps, tokens, wall_time_s, peak_rss_mb}' "$dir/summary.json" >> "$RESULTS"
    rm -rf "$dir/checkpoints"   # optimizer state: not needed once trained; adapter/ stays
}

sample() { # MODEL SEED GENERATION_SEED GRAFT_ARGS...
    local model=$1 seed=$2 gen=$3; shift 3
    done_already samples "$seed" model "$model" && return
    local file="$OUT/samples/$model-$seed.jsonl" start=$SECONDS i j
    : > "$file.part"
    for i in "${!PROMPTS[@]}"; do
        for ((j = 1; j <= N_SAMPLES; j++)); do
            "$GRAFT" generate "$@" --prompt "${PROMPTS[$i]}" --max-new-tokens "$MAX_NEW" \
                --temperature 0.8 --top-p 0.95 --seed $((1000 * gen + j)) --json \
                | jq -c --argjson p "$((i + 1))" --argjson j "$j" \
                    '{prompt_index: $p, sample: $j, seed, prompt, text, new_tokens, stop_reason}' >> "$file.part"
        done
    done
    mv "$file.part" "$file"
    jq -cs --arg m "$model" --argjson seed "$seed" --argjson secs "$((SECONDS - start))" \
        '{name: "samples", model: $m, seed: $seed, n: length, mean_new_tokens: (map(.new_tokens) | add / length),
          seconds: $secs}' "$file" >> "$RESULTS"
}

# The probe's data: PROBE_TRAIN / PROBE_TEST texts per class, drawn evenly through each file.
probe_data() {
    build_once appstream "$OUT/data/appstream"
    build_once tweets "$OUT/data/tweets"
    local split n half
    for split in train test; do
        if [ "$split" = train ]; then n=$PROBE_TRAIN; else n=$PROBE_TEST; fi
        half=$((n / 2))
        {
            jq -c '{text}' "$OUT/data/austen/text.$split.jsonl" | spread "$n" austen "$PROBE_CHARS"
            descriptions "$OUT/data/appstream/summarize.$split.jsonl" | spread "$half" other "$PROBE_CHARS"
            jq -c '{text}' "$OUT/data/tweets/text.$split.jsonl" | spread $((n - half)) other "$PROBE_CHARS"
        } > "$OUT/probe.$split.jsonl.part"
    done
    mv "$OUT/probe.train.jsonl.part" "$OUT/probe.train.jsonl"
    mv "$OUT/probe.test.jsonl.part" "$OUT/probe.test.jsonl"
}

probe() { # MODEL SEED
    local model=$1 seed=$2 file="$OUT/samples/$1-$2.jsonl"
    done_already probe "$seed" model "$model" && return
    jq -c '{text}' "$file" > "$file.text"
    "$GRAFT" eval probe --model all-minilm-l6-v2 --train "$OUT/probe.train.jsonl" --test "$OUT/probe.test.jsonl" \
        --score "$file.text" --seed "$PROBE_SEED" --json > "$OUT/probe-$model-$seed.json"
    jq -c --arg m "$model" --argjson seed "$seed" --argjson ps "$PROBE_SEED" \
        '{name: "probe", model: $m, seed: $seed, probe_seed: $ps, accuracy, macro_f1, n: .score.n,
          austen_share: (.score.predicted_share.austen // 0), mean_p_austen: .score.mean_probability.austen}' \
        "$OUT/probe-$model-$seed.json" >> "$RESULTS"
}

sample base 0 "$FIRST_SEED"
for seed in $SEEDS; do
    train "$seed"
    sample lora "$seed" "$seed" --adapter "$OUT/lora-$seed"
done
if [ "$PROBE" = auto ]; then
    if "$GRAFT" eval probe --help > /dev/null 2>&1; then PROBE=1; else PROBE=0; fi
fi
if [ "$PROBE" = 1 ]; then
    [ -e "$OUT/probe.test.jsonl" ] || probe_data
    probe base 0
    for seed in $SEEDS; do probe lora "$seed"; done
fi

# The table: mean +- sample std over seeds (the base model's loss is the same in every run).
jq -L "$(dirname "$0")" -rs --arg steps "$STEPS" '
  include "stats";
  def rows($n; $m): map(select(.name == $n and .model == $m));
  def ppl: map(exp);
  rows("train"; "lora") as $t | rows("probe"; "base") as $pb | rows("probe"; "lora") as $pl
  | rows("samples"; "base") as $sb | rows("samples"; "lora") as $sl
  | ($t | map(.base_eval_loss)[:1]) as $b0
  | "| model | seeds | held-out Austen loss | perplexity | samples | mean new tokens | judged Austen (share) | mean P(austen) |",
    "|---|---|---|---|---|---|---|---|",
    "| base | – | \($b0 | pm) | \($b0 | ppl | pm(2)) | \($sb | map(.n) | add // 0) | \($sb | map(.mean_new_tokens) | pm(1)) | \($pb | map(.austen_share) | pm) | \($pb | map(.mean_p_austen) | pm) |",
    "| LoRA r \($t[0].r // "–"), \($steps) steps | \($t | length) | \($t | map(.final_eval_loss) | pm) | \($t | map(.final_eval_loss) | ppl | pm(2)) | \($sl | map(.n) | add // 0) | \($sl | map(.mean_new_tokens) | pm(1)) | \($pl | map(.austen_share) | pm) | \($pl | map(.mean_p_austen) | pm) |",
    (($pb + $pl)[:1][] | "", "Style probe (all-MiniLM-L6-v2 embeddings, seed \(.probe_seed)) on its test set: accuracy \(.accuracy | fmt), macro-F1 \(.macro_f1 | fmt).")
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
GRAFT="$GRAFT" "$(dirname "$0")/domain-reports.sh" style "$RESULTS" "$OUT/report"
