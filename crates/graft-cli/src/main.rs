//! The `graft` command-line tool: thin clap commands over the `graft` library. The exit code
//! tells the kind of failure (`graft::error::ErrorKind`; the table is in `graft --help`).

// The commands' doc comments are their `--help` texts, where `[section]` names a config section
// as TOML writes it; rustdoc would read those brackets as links.
#![allow(rustdoc::broken_intra_doc_links)]

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use graft::error::ErrorKind;
use std::process::ExitCode;

mod commands;

/// graft: transfer learning with pretrained generative models.
#[derive(Parser)]
#[command(name = "graft", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// CPU threads for every kernel (default: RAYON_NUM_THREADS, else every core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download named models and datasets into the cache, or list them.
    Fetch(commands::fetch::Args),
    /// Show how a model's tokenizer splits a text (ids and tokens).
    Tokenize(commands::tokenize::Args),
    /// Fine-tune the default model on tweet sentiment and show the before/after table.
    Quickstart(commands::quickstart::Args),
    /// Compare transfer techniques on one task (table, JSON and HTML report with plots).
    Compare(commands::compare::Args),
    /// Summarise JSONL results by group (mean ± std per metric): Markdown, JSON and HTML with charts.
    Report(commands::report::Args),
    /// Fine-tune a model (LoRA, QLoRA, full, freeze) from a TOML config.
    Train(commands::train::Args),
    /// Adapt a BERT-family encoder to a text corpus by masked-language modelling.
    PretrainMlm(commands::pretrain_mlm::Args),
    /// Adapt a BERT-family encoder to a text corpus by unsupervised SimCSE (dropout views).
    PretrainSimcse(commands::pretrain_simcse::Args),
    /// Distill a teacher into a student (logit KD mixed with cross-entropy) from a TOML config.
    Distill(commands::distill::Args),
    /// Train one model on several tasks (task mixing, loss weighting, PCGrad) from a TOML config.
    Multitask(commands::multitask::Args),
    /// Learn a sequence of tasks with several methods: score matrix, forgetting, transfer.
    Continual(commands::continual::Args),
    /// Check a training config and its data without training.
    Validate(commands::validate::ValidateArgs),
    /// Show tokenized training samples with the supervised tokens marked.
    Preprocess(commands::validate::PreprocessArgs),
    /// Export a finished run as a PEFT adapter, merged HF folder, GGUF or GGUF LoRA adapter (checked on read-back).
    Export(commands::export::Args),
    /// Generate text after a prompt (KV cache, streamed to stdout).
    Generate(commands::generate::GenerateArgs),
    /// Build datasets (tweets, AppStream summaries and questions) and teacher answers for distillation.
    Data(commands::data::DataArgs),
    /// Score speech transcripts against a manifest: WER and CER per language with bootstrap 95 % intervals.
    Speech(commands::speech::SpeechArgs),
    /// Evaluate a model (perplexity, summaries, questions, classification; an encoder by probe and
    /// retrieval).
    Eval(commands::eval::EvalArgs),
    /// Measure generation and forward throughput.
    Bench(commands::bench::BenchArgs),
    /// Check a device against the CPU on seeded random weights (logits, LoRA gradients, training).
    Selftest(commands::selftest::Args),
    /// The top ImageNet classes of image files under EfficientNet-Lite0 (or a fine-tuned checkpoint).
    Classify(commands::classify::ClassifyArgs),
    /// Sentence embeddings of a JSONL file with a BERT encoder (JSONL + safetensors out).
    Embed(commands::embed::EmbedArgs),
    /// Heads on a frozen backbone's features: progressive networks over a sequence of tasks.
    Features(commands::features::FeaturesArgs),
    /// Image tasks on a pretrained CNN backbone: classification heads, probing or fine-tuning its top units.
    Vision(commands::vision::VisionArgs),
    /// Speech to text with a Whisper model (greedy or beam search, language detection).
    Transcribe(commands::transcribe::TranscribeArgs),
    /// Few-shot learning on episodes: prototypical networks, ANIL and the MAML family beside frozen-feature baselines.
    Meta(commands::meta::Args),
    /// Agents for game variants: PPO on the cart-pole, acrobot and maze families; frames as animated PNG.
    Games(commands::games::GamesArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The exit code of a failed command: that of the first library error in the chain of causes,
/// 1 for errors of the binary's own.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<graft::GraftError>())
        .map_or(ErrorKind::Other.exit_code(), graft::GraftError::exit_code)
}

/// Parses the command line (usage errors exit with 2 here), with the exit-code table as the
/// top-level help's epilogue.
fn parse() -> Cli {
    let matches = Cli::command().after_help(ErrorKind::help_table()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    graft::device::reuse_freed_memory();
    let cli = parse();
    init_logging(cli.verbose);
    let threads = cli.threads.map(usize::from);
    let outcome = graft::device::run_with_cpu_threads(threads, || run(cli.command)).map_err(anyhow::Error::from);
    match outcome.and_then(|r| r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Fetch(args) => commands::fetch::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Quickstart(args) => commands::quickstart::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::PretrainMlm(args) => commands::pretrain_mlm::run(args),
        Command::PretrainSimcse(args) => commands::pretrain_simcse::run(args),
        Command::Distill(args) => commands::distill::run(args),
        Command::Multitask(args) => commands::multitask::run(args),
        Command::Continual(args) => commands::continual::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Validate(args) => commands::validate::validate(args),
        Command::Preprocess(args) => commands::validate::preprocess(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Speech(args) => commands::speech::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Selftest(args) => commands::selftest::run(args),
        Command::Classify(args) => commands::classify::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Features(args) => commands::features::run(args),
        Command::Meta(args) => commands::meta::run(args),
        Command::Games(args) => commands::games::run(args),
        Command::Vision(args) => commands::vision::run(args),
        Command::Transcribe(args) => commands::transcribe::run(args),
    }
}
