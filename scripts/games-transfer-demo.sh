#!/usr/bin/env bash
# The measured transfer matrix of docs/games.md: a PPO agent learned on a source variant moved to
# other variants, each way against learning the target from scratch, over SEEDS (the source and
# the target runs of a seed share it). Every run uses configs/games-cartpole.toml's PPO settings.
#   From the default cart-pole (60 updates):
#   long-pole     a pole twice as long (pole_length 1.0), a weaker push (force 7); 60 updates:
#                 scratch, warm_start, frozen_trunk, progressive
#   acrobot       6 observations, 3 actions; 40 updates: scratch, remap (the hidden layers and the
#                 value head carry over, the input layers and policy head are fresh)
#   From the default maze (a room split by a wall with one door, goal bottom right; 40 updates):
#   maze-goal     the goal moved to the top of the right-hand corridor ([1, 5]); 40 updates:
#                 scratch, warm_start, frozen_trunk, progressive
#   maze-door     the door moved from the middle row to the top row; 40 updates:
#                 scratch, warm_start, progressive
#   maze-view7    a 7 x 7 view instead of 5 x 5 (100 observations instead of 52); 40 updates:
#                 scratch, remap
# Measures per run (summary.json): first_return (jump-start), episodes_to_threshold (goal:
# cart-pole 475, acrobot -100, maze 0.8; a run that never reaches it counts as its whole budget of
# episodes), auc (mean return over training), final_return, and the learning curve (mean return
# of each update's episodes against the episodes so far).
# Results: OUT/results.jsonl (one line per run), OUT/table.md (per pair and method: mean and 95 %
# confidence interval over seeds, and each method minus scratch paired by seed, flagged as
# negative transfer where the interval lies wholly on the worse side) and OUT/report/ (`graft
# report`: the same groups and paired differences as Markdown, JSON and HTML with charts and
# the learning curves, a chart per target).
# A rerun skips runs already in results.jsonl, and reads a finished run's summary instead of
# training it again.
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

source_run() { # NAME SEED ENV-ARGS...: trains a source once
    local dir="$OUT/$1-$2"
    [ -e "$dir/policy.safetensors" ] && return
    "$GRAFT" games train "$CONFIG" --set ppo.seed="$2" --set output.dir="\"$dir\"" "${@:3}" --json > "$dir.json"
}

target() { # PAIR METHOD SEED SOURCE ENV-ARGS...
    local pair=$1 method=$2 seed=$3 source=$4; shift 4
    done_already "$pair:$method" "$seed" && return
    local dir="$OUT/$pair-$method-$seed"
    if ! jq -e .curve "$dir.json" > /dev/null 2>&1; then
        rm -rf "$dir"
        local args=(--set ppo.seed="$seed" --set output.dir="\"$dir\"" "$@")
        [ "$method" != scratch ] && args+=(--set transfer.from="\"$OUT/$source-$seed\"" --set transfer.method="\"$method\"")
        "$GRAFT" games train "$CONFIG" "${args[@]}" --json > "$dir.json"
    fi
    jq -c --arg name "$pair:$method" --arg pair "$pair" --arg method "$method" --argjson seed "$seed" '
        {name: $name, pair: $pair, method: $method, seed: $seed, first_return, final_return, auc,
         episodes_to_threshold: (.episodes_to_threshold // .episodes), reached: (.episodes_to_threshold != null),
         steps_to_threshold: (.steps_to_threshold // .steps), trainable_params,
         curve: [.curve[] | {update, episodes, mean_return}]}' "$dir.json" >> "$RESULTS"
}

LONG=(--set env.pole_length=1.0 --set env.force=7.0)
ACRO=(--set 'env.kind="acrobot"' --set ppo.updates=40)
MAZE=(--set 'env.kind="gridworld"' --set ppo.updates=40)
DOOR='env.layout=["#######", "#S....#", "#...#.#", "#...#.#", "#...#.#", "#...#G#", "#######"]'
for seed in $SEEDS; do
    source_run source "$seed"
    for m in scratch warm_start frozen_trunk progressive; do target long-pole "$m" "$seed" source "${LONG[@]}"; done
    for m in scratch remap; do target acrobot "$m" "$seed" source "${ACRO[@]}"; done
    source_run maze-source "$seed" "${MAZE[@]}"
    for m in scratch warm_start frozen_trunk progressive; do
        target maze-goal "$m" "$seed" maze-source "${MAZE[@]}" --set 'env.goal=[1, 5]'
    done
    for m in scratch warm_start progressive; do target maze-door "$m" "$seed" maze-source "${MAZE[@]}" --set "$DOOR"; done
    for m in scratch remap; do target maze-view7 "$m" "$seed" maze-source "${MAZE[@]}" --set env.view=7; done
done

jq -L "$HERE" -rs '
  include "stats";
  def metrics: ["first_return", "episodes_to_threshold", "auc", "final_return"];
  # Maze returns lie in [0, 1]: their measures get three decimals, episodes and the others one.
  def digits($pair; $m): if ($pair | startswith("maze")) and $m != "episodes_to_threshold" then 3 else 1 end;
  (map(.seed) | unique | length) as $n
  | "Seeds: \($n). Mean ± 95 % confidence interval (Student t over seeds).",
    "",
    "| target | method | reached the goal | first return | episodes to goal | AUC (mean return) | final return |",
    "|---|---|---|---|---|---|---|",
    (group_by(.pair)[] | group_by(.method)[] | . as $g
      | "| \($g[0].pair) | \($g[0].method) | \(map(select(.reached)) | length)/\(length) | "
        + ([metrics[] as $m | $g | map(.[$m]) | ci(digits($g[0].pair; $m))] | join(" | ")) + " |"),
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
              | ($d | ci(digits($g[0].pair; $m)))
                + (if ($mu - $better * $h) * $better > 0 then " **positive**"
                   elif ($mu + $better * $h) * $better < 0 then " **negative**" else "" end)]
             | join(" | ")) + " |"))
' "$RESULTS" > "$OUT/table.md"
cat "$OUT/table.md"
"$GRAFT" report "$RESULTS" --by pair,method --metric first_return,episodes_to_threshold,auc,final_return \
    --against method=scratch --curve curve:episodes:mean_return \
    --title "Transfer between game variants: cart-pole and maze agents moved to other variants" \
    --out "$OUT/report"
