# The tables of scripts/encoder-tapt-demo.sh from its results.jsonl (read with `jq -rs`).
include "stats";
def metrics: ["accuracy", "macro_f1", "recall_at_1", "mrr"];
def title: {base: "base (all-MiniLM-L6-v2)", mlm: "masked LM", simcse: "SimCSE"}[.] // .;

. as $rows
# The base encoder's line with the same (head) seed as a run.
| def base_of($seed): $rows | map(select(.name == "base" and .seed == $seed)) | first;
  ["base", "mlm", "simcse"] as $names
| [
    "| encoder | seeds | probe accuracy | probe macro-F1 | retrieval R@1 | retrieval MRR | held-out pretraining loss (before → after) | pretraining time (s) |",
    "|---|---|---|---|---|---|---|---|",
    ($names[] as $n
      | ($rows | map(select(.name == $n))) as $r
      | select($r | length > 0)
      | "| \($n | title) | \($r | length) | "
        + (metrics | map(. as $m | $r | map(.[$m]) | pm(3)) | join(" | "))
        + " | \(if $n == "base" then "" else "\($r | map(.pretraining.base_eval_loss) | pm(4)) → \($r | map(.pretraining.final_eval_loss) | pm(4))" end)"
        + " | \(if $n == "base" then "" else $r | map(.pretraining.wall_time_s) | pm(0) end) |"),
    "",
    "Adapted minus base with the same seed, then mean ± std (above 0 is better for every column):",
    "",
    "| encoder | Δ probe accuracy | Δ probe macro-F1 | Δ retrieval R@1 | Δ retrieval MRR |",
    "|---|---|---|---|---|",
    ($names[1:][] as $n
      | ($rows | map(select(.name == $n))) as $r
      | select($r | length > 0)
      | "| \($n | title) | "
        + (metrics | map(. as $m | [$r[] | base_of(.seed) as $b | select($b != null) | .[$m] - $b[$m]] | pm(3)) | join(" | "))
        + " |")
  ]
| .[]
