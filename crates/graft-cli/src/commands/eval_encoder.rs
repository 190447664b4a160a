//! `graft eval probe` and `graft eval retrieval`: a sentence encoder judged by its frozen
//! embeddings (a classification head trained on them; retrieval of paired texts by cosine).

use super::eval_tasks::resolve_data_file;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use graft::features::{HeadConfig, HeadKind};
use graft::models::bert::SentenceEncoder;
use graft::recipes::encoder_eval;
use graft::recipes::labelled::LabelledSets;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Texts per forward pass of the encoder.
const EMBED_BATCH: usize = 32;

/// The encoder options of both evaluations.
#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// Encoder: an asset name or a Hugging Face BERT folder (as `graft embed --model`; e.g. the
    /// `encoder/` folder `graft pretrain-mlm` or `graft pretrain-simcse` exports).
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Never download: fail if the model is not in the cache.
    #[arg(long)]
    offline: bool,
}

impl EncoderArgs {
    fn load(&self) -> Result<SentenceEncoder> {
        let device = graft::device::parse_device(&self.device)?;
        let source = graft::assets::resolve_model(&self.model, self.offline)?;
        let start = Instant::now();
        let enc = SentenceEncoder::load(&source, &device, candle_core::DType::F32)
            .with_context(|| format!("loading encoder `{}`", self.model))?;
        eprintln!("loaded {} ({} dims) in {:.1}s", self.model, enc.dim(), start.elapsed().as_secs_f64());
        Ok(enc)
    }
}

/// The head on the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HeadChoice {
    /// Logistic regression on the standardised embeddings.
    Linear,
    /// One hidden ReLU layer (--hidden units).
    Mlp,
}

/// `graft eval probe` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: graft eval probe --train sentiment.train.jsonl --test sentiment.test.jsonl --json\n         \
graft eval probe --model runs/mlm-tweets/encoder --train train.jsonl --test test.jsonl --head mlp --seed 3\n         \
graft eval probe --train train.jsonl --test test.jsonl --score unlabelled.jsonl\n\n\
--train and --test are JSONL files of {\"text\": ..., \"label\": ...} lines (string labels). The encoder\n\
embeds every text (mean-pooled, L2-normalised, as graft embed; the encoder stays frozen); a head is\n\
trained on the training embeddings (standardised features, AdamW, docs/encoders.md \"Feature\n\
extraction\") and scored on the test file: accuracy, macro-F1 and per-class precision / recall /\n\
F1. The classes are the distinct training labels, sorted; a test label that is not one of them is\n\
an error naming file:line. --score labels the {\"text\"} lines of another file and reports the share\n\
predicted as each class and the mean softmax probability of each class."
)]
pub struct ProbeArgs {
    #[command(flatten)]
    encoder: EncoderArgs,
    /// Training file: {"text", "label"} lines (a path or dataset:NAME/FILE).
    #[arg(long)]
    train: PathBuf,
    /// Held-out file, scored: {"text", "label"} lines.
    #[arg(long)]
    test: PathBuf,
    /// Unlabelled {"text"} lines to label with the trained head.
    #[arg(long)]
    score: Option<PathBuf>,
    /// Head: linear or mlp.
    #[arg(long, value_enum, default_value = "linear")]
    head: HeadChoice,
    /// Hidden units of the mlp head.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Passes over the training embeddings.
    #[arg(long, default_value_t = HeadConfig::default().epochs)]
    epochs: usize,
    /// Seed of the head's initial weights and shuffling.
    #[arg(long, default_value_t = HeadConfig::default().seed)]
    seed: u64,
    /// Training examples per optimizer step of the head.
    #[arg(long, default_value_t = HeadConfig::default().batch_size)]
    batch_size: usize,
    /// AdamW learning rate of the head.
    #[arg(long, default_value_t = HeadConfig::default().lr)]
    lr: f64,
    /// Train on the first N lines of --train only.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Where the texts of `graft eval retrieval` come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PairFormat {
    /// One JSON object per line with string fields --query-field and --target-field.
    Pairs,
    /// Summarization lines (as `graft eval summarize` reads them, e.g.
    /// dataset:appstream/summarize.test.jsonl): the document is the query, its summary the target.
    Summaries,
}

/// `graft eval retrieval` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft eval retrieval --data pairs.jsonl --json\n         \
graft eval retrieval --data dataset:appstream/summarize.test.jsonl --format summaries --json\n         \
graft eval retrieval --model runs/simcse-tweets/encoder --data qa.jsonl --query-field question --target-field answer\n\n\
Each line holds a query and its target. Every query and every target is embedded (mean-pooled,\n\
L2-normalised, as graft embed) and each query's own target is ranked among all the targets by\n\
cosine similarity: rank = 1 + the number of other targets scoring at least as high (a tie counts\n\
against the query). Reports recall@1, @5, @10 (share of queries whose target ranks within k) and\n\
MRR (mean of 1/rank). --format summaries reads summarization files (messages: the user turn\n\
after the instruction is the document, the assistant turn the summary; or document/summary\n\
fields) with the document as the query and the summary as the target; lines with an empty\n\
document or summary are skipped and counted.")]
pub struct RetrievalArgs {
    #[command(flatten)]
    encoder: EncoderArgs,
    /// The pairs (JSONL): a path, or dataset:NAME/FILE (built on first use).
    #[arg(long)]
    data: PathBuf,
    /// Layout of the lines: pairs or summaries.
    #[arg(long, value_enum, default_value = "pairs")]
    format: PairFormat,
    /// Field holding the query (--format pairs).
    #[arg(long, default_value = "query")]
    query_field: String,
    /// Field holding the target (--format pairs).
    #[arg(long, default_value = "target")]
    target_field: String,
    /// Use only the first N pairs (after skips).
    #[arg(long)]
    limit: Option<usize>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn check_limit(flag: &str, limit: Option<usize>) -> Result<()> {
    if limit == Some(0) {
        super::bail_input!("{flag} must be at least 1");
    }
    Ok(())
}

/// Runs `graft eval probe`.
pub fn probe(args: ProbeArgs) -> Result<()> {
    check_limit("--limit-train", args.limit_train)?;
    let kind = match args.head {
        HeadChoice::Linear => HeadKind::Linear,
        HeadChoice::Mlp => HeadKind::Mlp { hidden: args.hidden },
    };
    let head = HeadConfig {
        kind,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..HeadConfig::default()
    };
    head.validate()?;
    let sets = LabelledSets::read(
        &resolve_data_file("--train", &args.train)?,
        &resolve_data_file("--test", &args.test)?,
        args.limit_train,
    )?;
    let score_texts = match &args.score {
        Some(p) => Some(graft::data::read_texts(&resolve_data_file("--score", p)?).map_err(graft::GraftError::from)?),
        None => None,
    };
    let enc = args.encoder.load()?;
    eprintln!(
        "probing on {} training / {} test texts, {} classes",
        sets.train.len(),
        sets.eval.len(),
        sets.labels.len()
    );
    let start = Instant::now();
    let out = encoder_eval::probe(&enc, &sets, score_texts.as_deref(), &head, EMBED_BATCH)?;
    let seconds = start.elapsed().as_secs_f64();
    let r = &out.report;
    if args.json {
        let report = serde_json::json!({
            "model": args.encoder.model, "train": args.train, "test": args.test,
            "n_train": out.n_train, "n_test": out.n_test, "classes": out.classes,
            "accuracy": r.accuracy, "macro_f1": r.macro_f1, "per_class": r.per_class, "confusion": r.confusion,
            "head": head, "score": out.score, "seconds": seconds,
        });
        println!("{report}");
        return Ok(());
    }
    super::eval_tasks::print_per_class(&r.per_class);
    println!(
        "accuracy {:.4}  macro-F1 {:.4}  ({} test / {} training texts, {} classes; {:.1}s)",
        r.accuracy,
        r.macro_f1,
        out.n_test,
        out.n_train,
        out.classes.len(),
        seconds
    );
    if let Some(s) = &out.score {
        let cells: Vec<String> = s
            .predicted_share
            .iter()
            .map(|(label, share)| format!("{label} {:.3} (mean p {:.3})", share, s.mean_probability[label]))
            .collect();
        println!("scored {} texts: {}", s.n, cells.join(", "));
    }
    Ok(())
}

/// The queries and targets of `--data`, and how many lines were skipped.
fn read_pairs(args: &RetrievalArgs, file: &Path) -> Result<(Vec<String>, Vec<String>, usize)> {
    let (mut queries, mut targets, skipped): (Vec<String>, Vec<String>, usize) = match args.format {
        PairFormat::Pairs => {
            let rows = graft::data::read_string_fields(file, &[&args.query_field, &args.target_field])
                .map_err(graft::GraftError::from)?;
            let (q, t) = rows.into_iter().map(|(_, mut f)| (f.remove(0), f.remove(0))).unzip();
            (q, t, 0)
        }
        PairFormat::Summaries => {
            let (pairs, skips) = graft::recipes::tasks::load_summarize(file, None)?;
            let (q, t) = pairs.into_iter().map(|p| (p.document, p.summary)).unzip();
            (q, t, skips.n_skipped)
        }
    };
    if let Some(n) = args.limit {
        queries.truncate(n);
        targets.truncate(n);
    }
    if queries.is_empty() {
        super::bail_input!("{}: no usable pairs ({skipped} skipped)", args.data.display());
    }
    Ok((queries, targets, skipped))
}

/// Runs `graft eval retrieval`.
pub fn retrieval(args: RetrievalArgs) -> Result<()> {
    check_limit("--limit", args.limit)?;
    let (queries, targets, skipped) = read_pairs(&args, &resolve_data_file("--data", &args.data)?)?;
    let enc = args.encoder.load()?;
    eprintln!("retrieving {} targets for {} queries", targets.len(), queries.len());
    let start = Instant::now();
    let s = encoder_eval::retrieval(&enc, &queries, &targets, EMBED_BATCH)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let format = args.format.to_possible_value().map(|v| v.get_name().to_string());
        let report = serde_json::json!({
            "model": args.encoder.model, "data": args.data, "format": format, "n": s.n, "n_skipped": skipped,
            "recall_at_1": s.recall_at_1, "recall_at_5": s.recall_at_5, "recall_at_10": s.recall_at_10,
            "mrr": s.mrr, "seconds": seconds,
        });
        println!("{report}");
    } else {
        println!(
            "recall@1 {:.4}  recall@5 {:.4}  recall@10 {:.4}  MRR {:.4}  ({} pairs; {skipped} skipped; {seconds:.1}s)",
            s.recall_at_1, s.recall_at_5, s.recall_at_10, s.mrr, s.n
        );
    }
    Ok(())
}
