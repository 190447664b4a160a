# The tables of scripts/encoder-tapt-demo.sh from its results.jsonl (read with `jq -rs`).
include "stats";
def metrics: ["accuracy", "macro_f1", "recall_at_1", "mrr"];
def title: {base: "base (all-MiniLM-L6-v2)", mlm: "masked LM", simcse: "SimCSE"}[.] // .;

. as $rows
| ($rows | map(select(.name == "base")) | first) as $base
| ["base", "mlm", "simcse"] as $names
| [
    "| encoder | seeds | probe accuracy | probe macro-F1 | retrieval R@1 | retrieval MRR | held-out pretraining loss (before → after) | pretraining time (s) |",
    "|---|---|---|---|---|---|---|---|",
    ($names[] as $n
      | ($rows | map(select(.name == $n))) as $r
      | select($r | length > 0)
      | "| \($n | title) | \(if $n == "base" then "–" else $r | length end) | "
        + (metrics | map(. as $m | $r | map(.[$m]) | if $n == "base" then .[0] | fmt(3) else pm(3) end) | join(" | "))
        + " | \(if $n == "base" then "" else "\($r | map(.pretraining.base_eval_loss) | pm(4)) → \($r | map(.pretraining.final_eval_loss) | pm(4))" end)"
        + " | \(if $n == "base" then "" else $r | map(.pretraining.wall_time_s) | pm(0) end) |"),
    "",
    "Adapted minus base, per seed (above 0 is better for every column):",
    "",
    "| encoder | Δ probe accuracy | Δ probe macro-F1 | Δ retrieval R@1 | Δ retrieval MRR |",
    "|---|---|---|---|---|",
    ($names[1:][] as $n
      | ($rows | map(select(.name == $n))) as $r
      | select(($r | length > 0) and $base != null)
      | "| \($n | title) | " + (metrics | map(. as $m | $r | map(.[$m] - $base[$m]) | pm(3)) | join(" | ")) + " |")
  ]
| .[]
