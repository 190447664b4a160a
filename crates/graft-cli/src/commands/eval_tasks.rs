//! `graft eval summarize` and `graft eval qa`: greedy generations scored with ROUGE and SQuAD
//! exact match / F1.

use super::generate::{AdapterArgs, ModelArgs};
use anyhow::Result;
use clap::Args;
use graft::datasets::task_files::SkipReport;
use graft::recipes::tasks;
use graft::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

/// Options shared by the task evaluations.
#[derive(Debug, Args)]
pub struct TaskEvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The evaluation file (JSONL): a path, or `dataset:NAME/FILE` (built on first use).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Most tokens generated per example.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Score only the first N examples (after skips).
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object on stdout (with every prediction).
    #[arg(long)]
    json: bool,
}

/// `graft eval classify` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft eval classify --data dataset:tweets/chat.test.jsonl --json\n         \
graft eval classify --model runs/student/model --data dataset:tweets/chat.test.jsonl\n\n\
Lines are training lines (--format messages, alpaca or prompt_completion) whose answer is a label\n\
word. Each prompt is rendered as training renders it and the label whose first token is most\n\
likely next is the prediction (label scoring: nothing is generated or parsed). Reports accuracy,\n\
macro-F1, per-class precision / recall / F1 and the confusion matrix. The labels are the file's\n\
distinct answers (sorted) unless --labels names them.")]
pub struct ClassifyArgs {
    #[command(flatten)]
    common: TaskEvalArgs,
    /// Layout of the lines: messages, alpaca or prompt_completion.
    #[arg(long, default_value = "messages")]
    format: String,
    /// Label words, comma-separated (default: the distinct answers of the file).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
}

/// `graft eval summarize` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: graft eval summarize --data dataset:appstream/summarize.test.jsonl --limit 20 --json\n\n\
Lines are {\"messages\": [user, assistant]} (the assistant message is the reference) or\n\
{\"document\", \"summary\"}; the document is sent as a chat user turn after a fixed instruction and\n\
the greedy reply, up to the end of the turn, is scored: mean ROUGE-1/2/L F1. Lines with an empty\n\
document or summary are skipped and counted."
)]
pub struct SummarizeArgs {
    #[command(flatten)]
    common: TaskEvalArgs,
}

/// `graft eval qa` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft eval qa --data dataset:appstream/qa.test.jsonl --limit 20 --json\n\n\
Lines are SQuAD-style: {\"id\", \"context\", \"question\", \"answers\": {\"text\": [...], \"answer_start\": [...]}}\n\
(or \"answers\": [{\"text\", \"answer_start\"}]). Context and question go in one chat user turn; the\n\
greedy reply, up to the end of the turn, is scored with SQuAD's exact match and token F1 (best over\n\
the gold answers). Lines whose answer is not in the context are skipped and counted.")]
pub struct QaArgs {
    #[command(flatten)]
    common: TaskEvalArgs,
}

impl TaskEvalArgs {
    fn check(&self, default_max_new_tokens: usize) -> Result<usize> {
        if self.limit == Some(0) {
            super::bail_input!("--limit must be at least 1");
        }
        let max_new = self.max_new_tokens.unwrap_or(default_max_new_tokens);
        if max_new == 0 {
            super::bail_input!("--max-new-tokens must be at least 1");
        }
        self.adapter.check()?;
        Ok(max_new)
    }

    /// The evaluation file `--data` names (a `dataset:` reference is built on first use).
    fn data_file(&self) -> Result<PathBuf> {
        resolve_data_file("--data", &self.data)
    }

    /// Loads the model and tokenizer, with the adapter applied when one is given.
    fn load(&self) -> Result<(graft::models::llama::Llama, Tokenizer)> {
        let (source, mut model) = self.model.load()?;
        self.adapter.apply(&mut model)?;
        Ok((model, Tokenizer::from_source(&source)?))
    }
}

/// The file a data flag names: a path, or `dataset:NAME/FILE` (built on first use); a missing
/// file is an input error naming the flag.
pub(super) fn resolve_data_file(flag: &str, path: &std::path::Path) -> Result<PathBuf> {
    let file = graft::recipes::data_build::resolve(path, &mut |n| eprintln!("{n}"))?;
    if !file.is_file() {
        super::bail_input!(
            "{flag} {}: no such file (pass a JSONL file, or dataset:NAME/FILE such as dataset:tweets/chat.test.jsonl, built on first use)",
            path.display()
        );
    }
    Ok(file)
}

fn progress(done: usize, total: usize) {
    eprintln!("example {done}/{total}");
}

fn skips_json(s: &SkipReport) -> serde_json::Value {
    serde_json::json!({ "n_lines": s.n_lines, "n_skipped": s.n_skipped, "skipped": s.skipped })
}

/// Runs `graft eval classify`.
pub fn classify(args: ClassifyArgs) -> Result<()> {
    let a = &args.common;
    a.check(1)?;
    let format: graft::data::DataFormat = match serde_json::from_value(serde_json::json!(args.format)) {
        Ok(f) => f,
        Err(_) => super::bail_input!("--format {}: expected messages, alpaca or prompt_completion", args.format),
    };
    let file = a.data_file()?;
    let (model, tok) = a.load()?;
    let data = graft::recipes::classify_eval::read_classify_data(&file, format, &tok, &args.labels, a.limit)?;
    eprintln!("scoring {} examples on {} labels", data.gold.len(), data.labels.len());
    let start = Instant::now();
    let result = graft::recipes::classify_eval::classify(&model, &tok, &data)?;
    let secs = start.elapsed().as_secs_f64();
    let r = &result.report;
    if a.json {
        let report = serde_json::json!({
            "task": "classify", "model": a.model.model, "adapter": a.adapter.json(), "data": a.data,
            "n": data.gold.len(), "labels": data.labels, "accuracy": r.accuracy, "macro_f1": r.macro_f1,
            "per_class": r.per_class, "confusion": r.confusion, "seconds": secs,
        });
        println!("{report}");
    } else {
        print_per_class(&r.per_class);
        println!(
            "accuracy {:.4}  macro-F1 {:.4}  ({} examples, {} labels; {:.1}s)",
            r.accuracy,
            r.macro_f1,
            data.gold.len(),
            data.labels.len(),
            secs
        );
    }
    Ok(())
}

/// Runs `graft eval summarize`.
pub fn summarize(args: SummarizeArgs) -> Result<()> {
    let a = args.common;
    let max_new = a.check(64)?;
    let (pairs, skips) = tasks::load_summarize(&a.data_file()?, a.limit)?;
    if pairs.is_empty() {
        super::bail_input!(
            "{}: no usable pairs ({} lines, {} skipped)",
            a.data.display(),
            skips.n_lines,
            skips.n_skipped
        );
    }
    let (model, tok) = a.load()?;
    let start = Instant::now();
    let s = tasks::eval_summarize(&model, &tok, &pairs, max_new, &mut progress)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let report = serde_json::json!({
            "task": "summarize", "model": a.model.model, "adapter": a.adapter.json(), "data": a.data,
            "max_new_tokens": max_new, "n": s.n, "rouge1": s.rouge1, "rouge2": s.rouge2, "rougeL": s.rouge_l,
            "skips": skips_json(&skips), "seconds": secs, "samples": s.samples,
        });
        println!("{report}");
    } else {
        for sample in s.samples.iter().take(3) {
            println!("[{}]\n  model:     {}\n  reference: {}", sample.id, sample.prediction, sample.reference);
        }
        println!(
            "ROUGE-1 {:.4}  ROUGE-2 {:.4}  ROUGE-L {:.4}  (mean F1 over {} pairs; {} skipped; {:.1}s)",
            s.rouge1, s.rouge2, s.rouge_l, s.n, skips.n_skipped, secs
        );
    }
    Ok(())
}

/// Runs `graft eval qa`.
pub fn qa(args: QaArgs) -> Result<()> {
    let a = args.common;
    let max_new = a.check(48)?;
    let (items, skips) = tasks::load_qa(&a.data_file()?, a.limit)?;
    if items.is_empty() {
        super::bail_input!(
            "{}: no usable questions ({} lines, {} skipped)",
            a.data.display(),
            skips.n_lines,
            skips.n_skipped
        );
    }
    let (model, tok) = a.load()?;
    let start = Instant::now();
    let s = tasks::eval_qa(&model, &tok, &items, max_new, &mut progress)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let report = serde_json::json!({
            "task": "qa", "model": a.model.model, "adapter": a.adapter.json(), "data": a.data,
            "max_new_tokens": max_new, "n": s.squad.n, "exact_match": s.squad.exact_match, "f1": s.squad.f1,
            "in_context": s.in_context, "skips": skips_json(&skips), "seconds": secs, "samples": s.samples,
        });
        println!("{report}");
    } else {
        for sample in s.samples.iter().take(3) {
            println!("[{}]\n  model: {}\n  gold:  {}", sample.id, sample.prediction, sample.reference);
        }
        println!(
            "EM {:.4}  F1 {:.4}  (over {} questions; answer found in context {:.1}%; {} skipped; {:.1}s)",
            s.squad.exact_match,
            s.squad.f1,
            s.squad.n,
            100.0 * s.in_context,
            skips.n_skipped,
            secs
        );
    }
    Ok(())
}

/// Prints one line of precision, recall and F1 per class: the human summary of every
/// classification evaluation (`graft eval classify`, `graft eval probe`).
pub(super) fn print_per_class(per_class: &[graft::eval::classification::ClassScores]) {
    for c in per_class {
        println!(
            "{:<16} precision {:.3}  recall {:.3}  F1 {:.3}  ({} examples)",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
}
