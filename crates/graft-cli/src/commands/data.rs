//! `graft data build NAME`: the files of graft's named datasets — tweet sentiment as chat,
//! alpaca and text lines (`tweets`), summarization and question answering from Debian's AppStream
//! metadata (`appstream`), Jane Austen's novels as plain text with held-out chapters (`austen`),
//! their dialogue as chat turns and single lines (`austen-dialogue`),
//! multilingual synthetic speech with held-out sentences and voices (`speech`) — written into a
//! folder. Configs reach the same files as `dataset:NAME/FILE`, built into the
//! cache on first use. `graft data teacher-answers` rewrites a training file's answers with a
//! teacher model's (`teacher_answers.rs`).

use anyhow::Result;
use clap::{Args, Subcommand};
use graft::recipes::austen_data::{build_austen, AustenOptions};
use graft::recipes::austen_dialogue_data::{build_austen_dialogue, DialogueOptions};
use graft::recipes::data_build::{self, BuildSummary, TweetsOptions};
use graft::recipes::speech_data::{build_speech, SpeechOptions, SpeechSummary};
use graft::recipes::tasks::{build_appstream, BuildOptions};
use std::path::PathBuf;

/// Build the files of a named dataset.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft data build tweets --out data/tweets\n  \
graft data build appstream --out data/appstream --max 2000 --json\n  \
graft data build austen --out data/austen\n  \
graft data build austen-dialogue --out data/austen-dialogue\n  \
graft data build speech --out data/speech --languages de,es,fr,it,pt\n  \
graft data teacher-answers --model runs/teacher/model --data dataset:tweets/chat.train.jsonl --out answers.jsonl\n\n\
A config may name these files as dataset:NAME/FILE (e.g. dataset:tweets/chat.train.jsonl): they\n\
are then built with the default options into the cache the first time (docs/data.md).")]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Build a dataset from local files.
    Build(BuildArgs),
    /// Replace the answers of a training file by a teacher model's (sequence-level
    /// distillation data; resumable).
    TeacherAnswers(super::teacher_answers::TeacherAnswersArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft data build tweets --out data/tweets\n  \
graft data build appstream --out data/appstream --max 2000 --json\n  \
graft data build austen --out data/austen\n  \
graft data build austen-dialogue --out data/austen-dialogue\n  \
graft data build speech --out data/speech --languages de,es,fr,it,pt")]
struct BuildArgs {
    #[command(subcommand)]
    source: BuildSource,
}

#[derive(Debug, Subcommand)]
enum BuildSource {
    /// Tweet sentiment (the `tweets` asset) as chat turns, alpaca instructions and plain text.
    Tweets(TweetsArgs),
    /// Summarization pairs (description → summary) and SQuAD-style questions from the AppStream
    /// metadata that `apt-get update` downloads.
    Appstream(AppstreamArgs),
    /// Jane Austen's six novels (the `janeaustenr` asset) as plain-text passages, whole
    /// chapters held out for testing.
    Austen(AustenArgs),
    /// The dialogue of Jane Austen's novels: conversational turns (a line, the reply from the
    /// next paragraph) as chat lines and single speeches as text, whole chapters held out.
    AustenDialogue(AustenDialogueArgs),
    /// Multilingual speech: translated AppStream sentences spoken by espeak-ng (16 kHz WAV +
    /// JSONL manifests), with held-out sentences and held-out voices.
    Speech(SpeechArgs),
}

/// `graft data build tweets` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build tweets --out data/tweets --train 500 --test 100 --json\n\n\
Writes chat.{train,test}.jsonl (messages: the quick start's sentiment question, the label as the\n\
answer), alpaca.{train,test}.jsonl (instruction, the tweet as input, the label as output) and\n\
text.{train,test}.jsonl (the tweets as {\"text\"} lines). The defaults are the files that\n\
dataset:tweets/FILE stands for in a config.")]
struct TweetsArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Training tweets.
    #[arg(long, default_value_t = TweetsOptions::default().n_train)]
    train: usize,
    /// Test tweets (disjoint from the training ones).
    #[arg(long, default_value_t = TweetsOptions::default().n_test)]
    test: usize,
    /// Seed of the draw.
    #[arg(long, default_value_t = TweetsOptions::default().seed)]
    seed: u64,
    /// Print one JSON object (the line counts) on stdout.
    #[arg(long)]
    json: bool,
}

/// `graft data build appstream` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build appstream --out data/appstream --max 2000 --json\n\n\
Writes summarize.{train,test}.jsonl (messages format: train with `graft train`, score with\n\
`graft eval summarize`), qa.{train,test}.jsonl (SQuAD-style: score with `graft eval qa`) and\n\
qa.{train,test}.messages.jsonl (the same questions as chat turns). Components are split by a hash\n\
of their ID and --seed, so a component stays on its side whatever --max is.")]
struct AppstreamArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// An AppStream component file (YAML, gzip'd or not); default: every
    /// /var/lib/apt/lists/*_dep11_Components-ARCH.yml.gz.
    #[arg(long)]
    appstream: Option<PathBuf>,
    /// Most components to use (in file order, after skips).
    #[arg(long)]
    max: Option<usize>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of components in the test split.
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
    /// Skip components whose plain-text description is longer than this many characters.
    #[arg(long, default_value_t = 1200)]
    max_description_chars: usize,
    /// Print one JSON object (the counts) on stdout.
    #[arg(long)]
    json: bool,
}

/// `graft data build austen` options.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft data build austen --out data/austen --max-chars 2000 --json\n\n\
Writes text.train.jsonl and text.test.jsonl: {\"text\", \"novel\", \"chapter\"} lines, each a passage of\n\
consecutive paragraphs of one chapter. Chapters --test-every, 2x, 3x ... of each novel go to the test\n\
file, the others to the training file. The defaults are the files that dataset:austen/FILE stands\n\
for in a config.")]
struct AustenArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Longest passage, in characters.
    #[arg(long, default_value_t = AustenOptions::default().max_chars)]
    max_chars: usize,
    /// Hold out every N-th chapter of each novel.
    #[arg(long, default_value_t = AustenOptions::default().test_every)]
    test_every: usize,
    /// Print one JSON object (the line counts) on stdout.
    #[arg(long)]
    json: bool,
}

/// `graft data build austen-dialogue` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: graft data build austen-dialogue --out data/austen-dialogue --max-chars 200 --json\n\n\
A speech is a paragraph that opens with a double quote; its words are the quoted segments (the\n\
narration between them dropped), and a quote left open joins the next paragraph's speech. A turn is\n\
two consecutive speeches: the first as the user's message, the second as the assistant's.\n\
Writes chat.{train,valid,test}.jsonl (messages) and lines.{train,test}.jsonl (every speech as\n\
{\"text\"}), each line with its novel and chapter; turns and speeches longer than --max-chars are\n\
left out. Chapters --test-every, 2x, ... of each novel are test chapters, chapters --test-every/2,\n\
then every --test-every more, validation chapters (no lines file). The defaults are the files that\n\
dataset:austen-dialogue/FILE stands for in a config."
)]
struct AustenDialogueArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Longest line or reply kept, in characters.
    #[arg(long, default_value_t = DialogueOptions::default().max_chars)]
    max_chars: usize,
    /// Every N-th chapter of each novel is a test chapter (N of at least 3).
    #[arg(long, default_value_t = DialogueOptions::default().test_every)]
    test_every: usize,
    /// Print one JSON object (the line counts) on stdout.
    #[arg(long)]
    json: bool,
}

/// `graft data build speech` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: graft data build speech --out data/speech --languages de,es,fr,it,pt --per-language 300 --test 100\n\n\
Sentences: the translated summaries and first description sentences of Debian's AppStream\n\
metadata, cleaned (4-24 words, 20-160 characters, Latin letters and plain punctuation only, no\n\
digits or URLs, no untranslated English) and deduplicated. Languages: de, en, es, fr, it, pt.\n\
Each clip is spoken by espeak-ng (Debian package espeak-ng) with a voice of the language and a\n\
variant (de+m3, pt-br+f2, ...), a speed of 140-190 words per minute and a pitch of 25-75, all drawn\n\
with --seed. Per language, the first --test sentences of the seeded order are held out and one\n\
variant is kept out of training.\n\n\
Writes audio/LANG/*.wav (16 kHz mono 16-bit), train.jsonl, test_sentences.jsonl (held-out\n\
sentences, training voices), test_voices.jsonl (the same sentences, held-out voice) — lines of\n\
{audio, text, language, voice, speed, pitch, duration_s}, audio relative to OUT — and\n\
summary.json. The folder appears complete or not at all; an earlier speech build there is replaced."
)]
struct SpeechArgs {
    /// Output folder (new, empty, or an earlier speech build).
    #[arg(long)]
    out: PathBuf,
    /// Language codes, comma-separated (de, en, es, fr, it, pt).
    #[arg(long, value_delimiter = ',', default_value = "de,es,fr,it,pt")]
    languages: Vec<String>,
    /// Training sentences per language (fewer if a language has fewer).
    #[arg(long, default_value_t = SpeechOptions::default().per_language)]
    per_language: usize,
    /// Held-out sentences per language (each spoken twice: a training voice, the held-out voice).
    #[arg(long, default_value_t = SpeechOptions::default().test)]
    test: usize,
    /// Seed of every draw (sentence order, held-out voice, voices, speeds, pitches).
    #[arg(long, default_value_t = SpeechOptions::default().seed)]
    seed: u64,
    /// An AppStream component file (YAML, gzip'd or not); default: every
    /// /var/lib/apt/lists/*_dep11_Components-ARCH.yml.gz.
    #[arg(long)]
    appstream: Option<PathBuf>,
    /// Print the summary (summary.json) as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft data ...`.
pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Build(BuildArgs { source: BuildSource::Appstream(a) }) => appstream(a),
        DataCommand::Build(BuildArgs { source: BuildSource::Tweets(a) }) => tweets(a),
        DataCommand::Build(BuildArgs { source: BuildSource::Austen(a) }) => austen(a),
        DataCommand::Build(BuildArgs { source: BuildSource::AustenDialogue(a) }) => austen_dialogue(a),
        DataCommand::Build(BuildArgs { source: BuildSource::Speech(a) }) => speech(a),
        DataCommand::TeacherAnswers(a) => super::teacher_answers::run(a),
    }
}

fn speech(args: SpeechArgs) -> Result<()> {
    let sources = match &args.appstream {
        Some(file) => vec![file.clone()],
        None => graft::datasets::appstream::default_files()?,
    };
    let opts = SpeechOptions {
        languages: args.languages,
        per_language: args.per_language,
        test: args.test,
        seed: args.seed,
        sources,
    };
    let start = std::time::Instant::now();
    let summary = build_speech(&opts, &args.out, &mut |note| eprintln!("{note}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_speech(&summary, start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Clips per language and manifest, then the totals.
fn print_speech(s: &SpeechSummary, seconds: f64) {
    println!("  lang  sentences  train  test_sentences  test_voices  held-out variant  audio (min)");
    for (code, l) in &s.languages {
        let n = |split: &str| l.clips.get(split).copied().unwrap_or(0);
        println!(
            "  {code:<4}  {:>9}  {:>5}  {:>14}  {:>11}  {:>16}  {:>11.1}",
            l.sentences,
            n("train"),
            n("test_sentences"),
            n("test_voices"),
            format!("+{}", l.held_out_variant),
            l.duration_s / 60.0
        );
    }
    println!(
        "{} clips, {:.1} min of audio (espeak-ng {}), written in {seconds:.1} s",
        s.clips,
        s.duration_s / 60.0,
        s.espeak_ng
    );
    print_files(&BuildSummary { dataset: s.dataset.clone(), out: s.out.clone(), files: s.files.clone() });
}

fn austen(args: AustenArgs) -> Result<()> {
    let opts = AustenOptions { max_chars: args.max_chars, test_every: args.test_every };
    let summary = build_austen(&opts, &args.out, &mut |note| eprintln!("{note}"))?;
    print_summary(&summary, args.json)
}

fn austen_dialogue(args: AustenDialogueArgs) -> Result<()> {
    let opts = DialogueOptions { max_chars: args.max_chars, test_every: args.test_every };
    let summary = build_austen_dialogue(&opts, &args.out, &mut |note| eprintln!("{note}"))?;
    print_summary(&summary, args.json)
}

fn tweets(args: TweetsArgs) -> Result<()> {
    let opts = TweetsOptions { n_train: args.train, n_test: args.test, seed: args.seed };
    let summary = data_build::build_tweets(&opts, &args.out, &mut |note| eprintln!("{note}"))?;
    print_summary(&summary, args.json)
}

/// The summary as one JSON object, or the files with their line counts.
fn print_summary(summary: &BuildSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        print_files(summary);
    }
    Ok(())
}

fn print_files(summary: &BuildSummary) {
    for (name, n) in &summary.files {
        println!("  {:>7} lines  {}", n, summary.out.join(name).display());
    }
}

fn appstream(args: AppstreamArgs) -> Result<()> {
    let sources = match &args.appstream {
        Some(file) => vec![file.clone()],
        None => graft::datasets::appstream::default_files()?,
    };
    let opts = BuildOptions {
        sources,
        out: args.out.clone(),
        max: args.max,
        seed: args.seed,
        test_fraction: args.test_fraction,
        max_description_chars: args.max_description_chars,
    };
    let report = build_appstream(&opts, &mut |note| eprintln!("{note}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} components ({} without a license), skipped {:?}",
            report.n_components, report.n_without_license, report.skipped
        );
        print_files(&BuildSummary { dataset: "appstream".into(), out: report.out, files: report.files });
    }
    Ok(())
}
