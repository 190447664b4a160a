# Markdown tables of scripts/speech-lora-demo.sh's results.jsonl (jq -rs -f scripts/speech-table.jq):
# the LoRA run per language, the English control on every language, tiny.en's zero-shot WER.
def pct: (. * 1000 | round) as $x | "\($x / 10 | floor).\($x % 10)";
def ci: "[" + (.[0] | pct) + ", " + (.[1] | pct) + "]";
def cell(b; bci; a; aci): (b | pct) + " " + (bci | ci) + " → " + (a | pct) + " " + (aci | ci);
(map(select(.name | startswith("lora-"))) | group_by(.name)) as $runs
| "| trained on | held-out sentences, WER % [95 % CI] before → after | held-out voice | English (forgetting) | train s | encode s | peak MB |",
  "|---|---|---|---|---|---|---|",
  ($runs[] | (map({(.set): .}) | add) as $s
   | "| \($s.eval.trained_on) | \(cell($s.eval.before; $s.eval.before_ci95; $s.eval.after; $s.eval.after_ci95)) | \(cell($s.test_voices.before; $s.test_voices.before_ci95; $s.test_voices.after; $s.test_voices.after_ci95)) | \(cell($s.test_sentences.before; $s.test_sentences.before_ci95; $s.test_sentences.after; $s.test_sentences.after_ci95)) | \($s.eval.train_s | round) | \($s.eval.prepare_s | round) | \($s.eval.peak_rss_mb | round) |"),
  "",
  "| control (English LoRA), scored on | WER % [95 % CI] before → after |",
  "|---|---|",
  (map(select(.name == "control-en"))[] | select(.set == "eval" or .set == "test_sentences")
   | if .set == "eval" then "| en (its own held-out sentences) | \(cell(.before; .before_ci95; .after; .after_ci95)) |"
     else (.languages | to_entries[] | "| \(.key) | \(cell(.value.before; .value.before_ci95; .value.after; .value.after_ci95)) |") end),
  "",
  "| tiny.en (English-only) trained on de, scored on | WER % [95 % CI] before → after |",
  "|---|---|",
  (map(select(.name == "tiny-en-de"))[]
   | ({eval: "de, held-out sentences", test_voices: "de, held-out voice", test_sentences: "en (forgetting)"}[.set]) as $what
   | "| \($what) | \(cell(.before; .before_ci95; .after; .after_ci95)) |"),
  "",
  "| tiny.en zero-shot, language | WER % [95 % CI] |",
  "|---|---|",
  (map(select(.name == "zero-shot"))[] | .languages | to_entries[] | "| \(.key) | \(.value.wer | pct) \(.value.wer_ci95 | ci) |")
