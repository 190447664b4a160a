//! `graft speech`: speech tools that need no model — scoring transcripts against a speech
//! manifest (`score`).

use clap::{Args, Subcommand};
use graft::speech::score::{manifest::read_pairs, score, table, BootstrapOptions};
use std::path::PathBuf;

/// `graft speech` and its subcommands.
#[derive(Debug, Args)]
pub struct SpeechArgs {
    #[command(subcommand)]
    command: SpeechCommand,
}

#[derive(Debug, Subcommand)]
enum SpeechCommand {
    /// Word and character error rates of transcripts against a speech manifest, per language.
    Score(ScoreArgs),
}

/// Scores hypotheses against a manifest's references (docs/speech.md, "Scoring"): both texts are
/// normalised as Whisper's multilingual normaliser does (lowercase, bracketed and parenthesised
/// text removed, punctuation, symbols and marks replaced by spaces, accents kept), then aligned
/// word by word and character by character. Prints WER and CER per language and overall — total
/// edits over total reference words (characters) — with percentile-bootstrap 95 % intervals
/// over utterances.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  graft speech score --manifest data/speech/test_voices.jsonl --hypotheses hyp.jsonl\n  \
graft speech score --manifest data/speech/test_sentences.jsonl --hypotheses hyp.jsonl --json > wer.json\n\n\
Manifest lines need `audio`, `text` and `language` (as `graft data build speech` writes them); \
hypothesis lines are {\"audio\": ..., \"text\": ...}, one per manifest line, matched by `audio`."
)]
struct ScoreArgs {
    /// The references: a speech manifest (JSONL with `audio`, `text` and `language`).
    #[arg(long)]
    manifest: PathBuf,
    /// The transcripts: JSONL lines `{"audio": ..., "text": ...}`, one for every manifest line.
    #[arg(long)]
    hypotheses: PathBuf,
    /// Bootstrap resamples of the utterances for the 95 % intervals.
    #[arg(long, default_value_t = BootstrapOptions::default().resamples)]
    resamples: usize,
    /// Seed of the bootstrap (the same seed gives the same intervals).
    #[arg(long, default_value_t = BootstrapOptions::default().seed)]
    seed: u64,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft speech`.
pub fn run(args: SpeechArgs) -> anyhow::Result<()> {
    match args.command {
        SpeechCommand::Score(a) => {
            let utterances = read_pairs(&a.manifest, &a.hypotheses)?;
            let report = score(&utterances, &BootstrapOptions { resamples: a.resamples, seed: a.seed })?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", table(&report));
                println!(
                    "normaliser {}; 95 % intervals from {} bootstrap resamples (seed {})",
                    report.normaliser, report.bootstrap.resamples, report.bootstrap.seed
                );
            }
            Ok(())
        }
    }
}
