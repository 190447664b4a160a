#!/usr/bin/env bash
# The reports of docs/domain-adaptation.md (Markdown, JSON and an HTML page with a chart per
# metric, written by `graft report`) from one measurement's results.jsonl:
#   dapt          fine-tune/: ROUGE and answer loss per start and label budget, and the paired
#                 differences adapted - base per seed; forgetting/: held-out loss per text kind
#   encoder-tapt  probe and retrieval scores per encoder, paired differences from the base encoder
#   style         held-out Austen loss before/after, and the style probe's verdict on samples
# The demo scripts call it at their end; the copies in docs/reports/ were made with it.
# Usage: scripts/domain-reports.sh dapt|encoder-tapt|style RESULTS OUT   (GRAFT overrides)
set -euo pipefail
GRAFT=${GRAFT:-graft}
kind=$1 results=$2 out=$3
report() { "$GRAFT" report "$results" "$@" > /dev/null; }
case $kind in
    dapt)
        report --by start,labels --metric rouge1,rouge2,rougeL,eval_loss --against start=base \
            --title "Domain-adaptive pretraining, then a few-label summarization LoRA" --out "$out/fine-tune"
        report --by name --metric loss.domain,loss.tweets,loss.austen \
            --title "Domain-adaptive pretraining: held-out loss per kind of text (forgetting)" --out "$out/forgetting"
        ;;
    encoder-tapt)
        report --by name --metric accuracy,macro_f1,recall_at_1,mrr --against name=base \
            --title "Encoder task-adaptive pretraining: tweet-sentiment probe and AppStream retrieval" --out "$out"
        ;;
    style)
        report --by name,model --metric base_eval_loss,final_eval_loss,austen_share,mean_p_austen \
            --title "Style adaptation to Jane Austen: held-out loss and the style probe" --out "$out"
        ;;
    *)
        echo "unknown report kind '$kind': use dapt, encoder-tapt or style" >&2
        exit 2
        ;;
esac
