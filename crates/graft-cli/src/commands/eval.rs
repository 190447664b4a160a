//! `graft eval`: evaluation protocols (perplexity, summaries, questions, classification, and a
//! sentence encoder's probe and retrieval scores).

use super::generate::{AdapterArgs, ModelArgs};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use graft::tokenizer::Tokenizer;
use std::path::PathBuf;

/// Evaluate a model.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft eval perplexity --text /usr/share/common-licenses/Apache-2.0 --json\n  \
graft eval perplexity --adapter runs/quickstart/adapter --text notes.txt --window 256\n  \
graft eval summarize --data dataset:appstream/summarize.test.jsonl --limit 20 --json\n  \
graft eval qa --data dataset:appstream/qa.test.jsonl --limit 20 --json\n  \
graft eval classify --data dataset:tweets/chat.test.jsonl --json\n  \
graft eval probe --train sentiment.train.jsonl --test sentiment.test.jsonl --json\n  \
graft eval retrieval --data dataset:appstream/summarize.test.jsonl --format summaries --json")]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Perplexity of a text file over consecutive, non-overlapping windows.
    Perplexity(PerplexityArgs),
    /// Mean ROUGE-1/2/L F1 of greedy summaries against reference summaries.
    Summarize(super::eval_tasks::SummarizeArgs),
    /// SQuAD exact match and F1 of greedy answers to questions about a context.
    Qa(super::eval_tasks::QaArgs),
    /// Accuracy and macro-F1 of label scoring on a classification task's held-out file.
    Classify(super::eval_tasks::ClassifyArgs),
    /// Accuracy and macro-F1 of a classification head trained on a frozen encoder's embeddings.
    Probe(super::eval_encoder::ProbeArgs),
    /// Recall@1/5/10 and MRR of retrieving each query's own target by embedding cosine.
    Retrieval(super::eval_encoder::RetrievalArgs),
}

/// `graft eval perplexity` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: graft eval perplexity --text /usr/share/common-licenses/Apache-2.0 --window 512 --json\n         \
graft eval perplexity --adapter runs/quickstart/adapter --text notes.txt (base model + LoRA, not merged)\n\n\
The whole file is tokenized without special tokens and cut into windows of --window tokens (the\n\
partial last window is dropped); each window is scored alone from position 0, and the result is\n\
the mean negative log-likelihood of tokens 1..window-1 of every window (log-softmax in f64)."
)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// UTF-8 text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `graft eval ...`.
pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        EvalCommand::Perplexity(a) => perplexity(a),
        EvalCommand::Summarize(a) => super::eval_tasks::summarize(a),
        EvalCommand::Qa(a) => super::eval_tasks::qa(a),
        EvalCommand::Classify(a) => super::eval_tasks::classify(a),
        EvalCommand::Probe(a) => super::eval_encoder::probe(a),
        EvalCommand::Retrieval(a) => super::eval_encoder::retrieval(a),
    }
}

fn perplexity(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("reading {} (a UTF-8 text file is needed)", args.text.display()))?;
    let (source, mut model) = args.model.load()?;
    args.adapter.apply(&mut model)?;
    let tok = Tokenizer::from_source(&source)?;
    let ids = tok.encode(&text, false)?;
    eprintln!("{}: {} tokens, windows of {}", args.text.display(), ids.len(), args.window);
    let start = std::time::Instant::now();
    // A tokenizer that puts BOS in front of every text (Gemma) gets it in front of every window.
    let bos = tok.bos_id().filter(|_| tok.adds_bos());
    let p = graft::eval::perplexity_with_bos(&model, &ids, args.window, bos, &mut |done, total| {
        eprintln!("window {done}/{total}");
    })?;
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        let report = serde_json::json!({
            "model": args.model.model,
            "adapter": args.adapter.json(),
            "weights": args.model.weights.name(),
            "dtype": args.model.dtype,
            "text": args.text,
            "n_tokens": p.n_tokens,
            "window": p.window,
            "n_windows": p.n_windows,
            "n_predicted": p.n_predicted,
            "bos_per_window": bos.is_some(),
            "mean_nll": p.mean_nll,
            "ppl": p.ppl,
            "seconds": secs,
        });
        println!("{report}");
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.6} nats over {} tokens in {} windows of {}; {:.1}s)",
            p.ppl, p.mean_nll, p.n_predicted, p.n_windows, p.window, secs
        );
    }
    Ok(())
}
