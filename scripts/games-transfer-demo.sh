#!/usr/bin/env bash
# The measured transfer matrix of docs/games.md: a PPO agent learned on the default cart-pole
# (configs/games-cartpole.toml) moved to other variants, each way against learning the target
# from scratch, over SEEDS (the source and the target run of a seed share it):
#   long-pole   cart-pole with a pole twice as long (pole_length 1.0) and a weaker push (force 7)
#               methods: scratch, warm_start, frozen_trunk
#   acrobot     the acrobot (6 observations, 3 actions): scratch, remap (the hidden layers and
#               the value head carry over, the input layers and policy head are fresh)
# Measures per run (summary.json): first_return (jump-start), episodes_to_threshold (goal:
# cart-pole 475, acrobot -100; a run that never reaches it counts as its whole budget of
# episodes), auc (mean return over training) and final_return.
# Results: OUT/results.jsonl (one line per run), OUT/table.md (per pair and method: mean and 95 %
# confidence interval over seeds, and each method minus scratch paired by seed, flagged as
# negative transfer where the interval lies wholly on the worse side) and OUT/report/ (`graft
# report`: the same groups and paired differences as Markdown, JSON and HTML with charts).
# Usage: scripts/games-transfer-demo.sh [OUT]   (GRAFT, SEEDS override)
set -euo pipefail
GRAFT=${GRAFT:-graft}
OUT=${1:-runs/games-transfer}
SEEDS=${SEEDS:-"1 2 3 4 5 6 7 8 9 10"}
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIG="$HERE/../configs/games-cartpole.toml"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
. "$HERE/demo-lib.sh"

target() { # PAIR METHOD SEED ENV-ARGS...
    local pair=$1 method=$2 seed=$3; shift 3
    done_already "$pair:$method" "$seed" && return
    local dir="$OUT/$pair-$method-$seed"
    rm -rf "$dir"
    local args=(--set ppo.seed="$seed" --set output.dir="\"$dir\"" "$@")
    [ "$method" != scratch ] && args+=(--set transfer.from="\"$OUT/source-$seed\"" --set transfer.method="\"$method\"")
    "$GRAFT" games train "$CONFIG" "${args[@]}" --json > "$dir.json"
    jq -c --arg name "$pair:$method" --arg pair "$pair" --arg method "$method" --argjson seed "$seed" '
        {name: $name, pair: $pair, method: $method, seed: $seed, first_return, final_return, auc,
         episodes_to_threshold: (.episodes_to_threshold // .episodes), reached: (.episodes_to_threshold != null),
         steps_to_threshold: (.steps_to_threshold // .steps)}' "$dir.json" >> "$RESULTS"
}

LONG=(--set env.pole_length=1.0 --set env.force=7.0)
ACRO=(--set 'env.kind="acrobot"' --set ppo.updates=40)
for seed in $SEEDS; do
    if [ ! -e "$OUT/source-$seed/policy.safetensors" ]; then
        "$GRAFT" games train "$CONFIG" --set ppo.seed="$seed" --set output.dir="\"$OUT/source-$seed\"" --json \
            > "$OUT/source-$seed.json"
    fi
    for m in scratch warm_start frozen_trunk; do target long-pole "$m" "$seed" "${LONG[@]}"; done
    for m in scratch remap; do target acrobot "$m" "$seed" "${ACRO[@]}"; done
done

jq -L "$HERE" -rs '
  include "stats";
  def metrics: ["first_return", "episodes_to_threshold", "auc", "final_return"];
  (map(.seed) | unique | length) as $n
  | "Seeds: \($n). Mean ± 95 % confidence interval (Student t over seeds).",
    "",
    "| target | method | reached the goal | first return | episodes to goal | AUC (mean return) | final return |",
    "|---|---|---|---|---|---|---|",
    (group_by(.pair)[] | group_by(.method)[] | . as $g
      | "| \($g[0].pair) | \($g[0].method) | \(map(select(.reached)) | length)/\(length) | "
        + ([metrics[] as $m | $g | map(.[$m]) | ci(1)] | join(" | ")) + " |"),
    "",
    "Paired by seed, method minus scratch (episodes to goal: fewer is better; the others: more is better); **negative** marks an interval wholly on the worse side, **positive** one wholly on the better side.",
    "",
    "| target | method | first return | episodes to goal | AUC | final return |",
    "|---|---|---|---|---|---|",
    (group_by(.pair)[] | . as $pair
      | ($pair | map(select(.method == "scratch")) | map({key: (.seed | tostring), value: .}) | from_entries) as $base
      | ($pair | map(select(.method != "scratch")) | group_by(.method)[] | . as $g
        | "| \($g[0].pair) | \($g[0].method) | "
          + ([metrics[] as $m
              | ($g | map(.[$m] - $base[.seed | tostring][$m])) as $d
              | ($d | mean) as $mu | ($d | ci95) as $h
              | (if $m == "episodes_to_threshold" then -1 else 1 end) as $better
              | ($d | ci(1)) + (if ($mu - $h) * $better > 0 then " **positive**" elif ($mu + $h) * $better < 0 then " **negative**" else "" end)]
             | join(" | ")) + " |"))
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
"$GRAFT" report "$RESULTS" --by pair,method --metric first_return,episodes_to_threshold,auc,final_return \
    --against method=scratch --title "Transfer between game variants: a cart-pole agent moved to a long-pole cart-pole and to the acrobot" \
    --out "$OUT/report"
