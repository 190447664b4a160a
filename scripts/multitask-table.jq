# The tables of scripts/multitask-demo.sh from its results.jsonl (read with `jq -rs`).
include "stats";
def tasks: ["sentiment", "summaries", "qa"];
# The single-task run a multitask run's task is compared with.
def single_of($name; $task):
  if ($name | startswith("low_")) and $task == "sentiment" then "low_single_sentiment" else "single_\($task)" end;

. as $rows
| ($rows | map(select(.name != "base")) | map(.name) | unique) as $names
| ($rows | map(select(.name == "base")) | first) as $base
# The base model's held-out loss on a task: the base_eval_loss of that task's single-task runs.
| (tasks | map(. as $t | {($t): ($rows | map(select(.name == "single_\($t)") | .base_eval_loss) | first)}) | add) as $base_loss
| [
    "| run | seeds | sentiment accuracy | sentiment loss | summaries loss | qa loss | final loss weights | wall time (s) |",
    "|---|---|---|---|---|---|---|---|",
    (if $base then "| base model | – | \($base.sentiment_accuracy | fmt(3)) | \(tasks | map($base_loss[.] | if . == null then "" else fmt(3) end) | join(" | ")) | | |" else empty end),
    ($names[] as $n
      | ($rows | map(select(.name == $n))) as $r
      | "| \($n) | \($r | length) | \($r | map(.sentiment_accuracy | values) | pm(3)) | "
        + (tasks | map(. as $t | $r | map(.eval_loss[$t] | values) | pm(3)) | join(" | "))
        + " | \($r[0].loss_weight | to_entries | map("\(.key) \(.value | fmt(3))") | join(", ")) | \($r | map(.wall_time_s) | pm(0)) |"),
    "",
    "Negative transfer: multitask minus single-task on the same seed (loss: above 0 is worse; accuracy: below 0 is worse).",
    "",
    "| run | sentiment accuracy | sentiment loss | summaries loss | qa loss |",
    "|---|---|---|---|---|",
    ($names[] | select(contains("mt_")) as $n
      | ($rows | map(select(.name == $n))) as $r
      | def diffs($t; f): [$r[] as $m | $rows[] | select(.name == single_of($n; $t) and .seed == $m.seed)
                           | ($m | f) as $a | f as $b | select($a != null and $b != null) | $a - $b];
      "| \($n) | \(diffs("sentiment"; .sentiment_accuracy) | pm(3)) | "
        + (tasks | map(. as $t | diffs($t; .eval_loss[$t]) | pm(3)) | join(" | ")) + " |")
  ]
| .[]
