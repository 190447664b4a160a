# The tables of scripts/dapt-demo.sh from its results.jsonl (read with `jq -rs`).
include "stats";
def model_name: {base: "base model", cpt: "continued pretraining", cpt_replay: "continued pretraining + 20 % replay"}[.];
def scores: ["rouge1", "rouge2", "rougeL"];

. as $rows
| ($rows | map(select(.name | startswith("forgetting_")))) as $forget
| ($forget | map(select(.name == "forgetting_base")) | first) as $base
| ($rows | map(select(.name | startswith("ft_"))) | map(.labels) | unique) as $labels
| [
    "Held-out next-token loss (nats per token) of each starting model, and its change from the base model.",
    "",
    "| model | domain (AppStream test descriptions) | tweets | Austen (held-out chapters) |",
    "|---|---|---|---|",
    ($forget[] | (.name | ltrimstr("forgetting_")) as $m | .loss as $l
      | "| \($m | model_name) | " + (["domain", "tweets", "austen"] | map(. as $k
          | ($l[$k] | fmt(3)) + (if $m != "base" and $base then ($l[$k] - $base.loss[$k]) as $d | " (\(if $d > 0 then "+" else "" end)\($d | fmt(3)))" else "" end))
          | join(" | ")) + " |"),
    "",
    "Summarization after a fresh LoRA on N labelled pairs (mean ± std over seeds; ROUGE F1 on the held-out components, answer loss on the held-out pairs).",
    "",
    "| labels | start | seeds | ROUGE-1 | ROUGE-2 | ROUGE-L | answer loss |",
    "|---|---|---|---|---|---|---|",
    ($rows | map(select(.name | startswith("zero_")))[]
      | "| 0 | \(.start | model_name) | – | " + (. as $r | scores | map($r[.] | fmt(3)) | join(" | ")) + " | |"),
    ($labels[] as $n | ("base", "cpt") as $s
      | ($rows | map(select((.name | startswith("ft_")) and .labels == $n and .start == $s))) as $r
      | select($r | length > 0)
      | "| \($n) | \($s | model_name) | \($r | length) | "
        + (scores | map(. as $k | $r | map(.[$k]) | pm(3)) | join(" | "))
        + " | \($r | map(.eval_loss) | pm(3)) |"),
    "",
    "Paired difference, continued-pretraining start minus base start (same seed, same labelled pairs; above 0 is better for ROUGE, worse for loss).",
    "",
    "| labels | seeds | ROUGE-1 | ROUGE-2 | ROUGE-L | answer loss |",
    "|---|---|---|---|---|---|",
    ($labels[] as $n
      | [$rows[] | select(.name == "ft_cpt_\($n)") as $c
          | $rows[] | select(.name == "ft_base_\($n)" and .seed == $c.seed) | {c: $c, b: .}] as $pairs
      | select($pairs | length > 0)
      | "| \($n) | \($pairs | length) | "
        + (scores + ["eval_loss"] | map(. as $k | $pairs | map(.c[$k] - .b[$k]) | pm(3)) | join(" | ")) + " |")
  ]
| .[]
