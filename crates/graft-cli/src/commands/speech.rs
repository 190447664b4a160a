//! `graft speech`: scoring transcripts against a speech manifest (`score`) and fine-tuning a
//! Whisper model on speech manifests (`train`).

use clap::{Args, Subcommand};
use graft::recipes::speech_train::config::SpeechTrainConfig;
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
    /// Fine-tune Whisper (LoRA or full) on a speech manifest; score held-out manifests before and
    /// after.
    Train(TrainArgs),
    /// Write a Whisper model, with what `graft speech train` trained merged in, as a Hugging Face
    /// Whisper folder.
    Export(ExportArgs),
}

/// Writes a Whisper model as a Hugging Face folder (config.json, generation_config.json,
/// model.safetensors, tokenizer.json) that transformers' WhisperForConditionalGeneration loads,
/// with a LoRA adapter merged into the weights or trained weights applied (docs/speech.md,
/// "Exporting"). graft reads such folders back as --model.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  graft speech export --model whisper-base --adapter runs/speech-de/adapter --out whisper-base-de\n  \
graft speech export --model whisper-tiny-en --out whisper-tiny-en-hf --dtype f16\n  \
graft transcribe --model whisper-base-de clip.wav --language de"
)]
struct ExportArgs {
    /// The model: a speech-model asset or a CTranslate2 / Hugging Face Whisper folder.
    #[arg(long)]
    model: String,
    /// What `graft speech train` trained (RUN/adapter or RUN/trained.safetensors), merged in.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The folder to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Weight precision: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Never download: fail if the model is not in the cache.
    #[arg(long)]
    offline: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Fine-tunes a Whisper model on a speech manifest through the trainer (checkpoints, exact
/// resume, metrics.jsonl), with LoRA adapters or full weights on the projections
/// `adapter.targets` selects (decoder, encoder or both), and transcribes and scores `data.eval`
/// and every `data.score` manifest before and after training (docs/speech.md, "Fine-tuning").
/// Writes summary.json (WER and CER per manifest and language, with 95 % intervals, before and
/// after; loss; time; peak memory), the transcripts under hypotheses/, and the adapter (PEFT
/// folder adapter/) or trained weights (trained.safetensors) to output.dir.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft speech train speech-de.toml\n  \
graft speech train speech-de.toml --set data.languages='[\"es\"]' --set output.dir=runs/speech-es --json\n  \
graft speech train speech-de.toml --resume\n\n\
with a config such as:\n  \
[model]\n  name = \"whisper-base\"\n\n  \
[data]\n  train = \"data/speech/train.jsonl\"\n  eval = \"data/speech/test_sentences.jsonl\"\n  \
score = [\"data/speech/test_voices.jsonl\"]\n  languages = [\"de\"]\n\n  \
[adapter]\n  kind = \"lora\"   # or \"full\"\n  r = 16\n  targets = [\"decoder.*\"]\n\n  \
[train]\n  epochs = 2\n  batch_size = 8\n  lr = 1e-3\n\n  \
[output]\n  dir = \"runs/speech-de\"")]
struct TrainArgs {
    #[command(flatten)]
    run: super::run_args::RunArgs,
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
        SpeechCommand::Train(a) => train(a.run),
        SpeechCommand::Export(a) => export(a),
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

/// `graft speech train`: runs the config, then prints the scores before and after.
fn train(a: super::run_args::RunArgs) -> anyhow::Result<()> {
    let cfg = SpeechTrainConfig::load(&a.config, &a.overrides())?;
    let s = super::train::with_progress(|on_event| graft::recipes::speech_train::run(&cfg, a.resume, on_event))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!(
        "{}: {} clips ({:.1} min), {} trainable parameters, {} steps in {:.0}s (+{:.0}s encoding, {:.0}s scoring), \
         peak {:.0} MB; eval loss {:.3} -> {:.3}",
        s.model,
        s.train_clips,
        s.train_audio_s / 60.0,
        s.trainable_params,
        s.steps,
        s.train_s,
        s.prepare_s,
        s.score_s,
        s.peak_rss_mb.unwrap_or(f64::NAN),
        s.base_eval_loss,
        s.final_eval_loss
    );
    for (name, set) in &s.scores {
        let (b, f) = (&set.before.overall, &set.after.overall);
        println!(
            "  {name} ({} clips): WER {:.1} % [{:.1}, {:.1}] -> {:.1} % [{:.1}, {:.1}], CER {:.1} % -> {:.1} %",
            set.clips,
            100.0 * b.wer,
            100.0 * b.wer_ci95[0],
            100.0 * b.wer_ci95[1],
            100.0 * f.wer,
            100.0 * f.wer_ci95[0],
            100.0 * f.wer_ci95[1],
            100.0 * b.cer,
            100.0 * f.cer
        );
    }
    println!("summary in {}; output {}", cfg.output.dir.join("summary.json").display(), s.output.display());
    Ok(())
}

/// `graft speech export`: loads, applies the adapter, writes the folder.
fn export(a: ExportArgs) -> anyhow::Result<()> {
    let dtype = match a.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "f16" => candle_core::DType::F16,
        other => super::bail_input!("--dtype {other}: expected f32 or f16"),
    };
    let dir = graft::assets::resolve_speech_model(&a.model, a.offline)?;
    let mut tr =
        graft::speech::transcribe::Transcriber::open(&dir, &candle_core::Device::Cpu, candle_core::DType::F32)?;
    if let Some(adapter) = &a.adapter {
        tr.apply_trained(adapter)?;
    }
    let s = graft::speech::export::write_hf_folder(&tr, &a.out, dtype)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("wrote {} ({} tensors, {} parameters, {})", s.out.display(), s.tensors, s.parameters, s.dtype);
    }
    Ok(())
}
