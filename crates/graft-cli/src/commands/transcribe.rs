//! `graft transcribe`: speech to text with a Whisper model (CTranslate2 folder).

use anyhow::{Context, Result};
use clap::Args;
use graft::speech::audio::load_audio;
use graft::speech::transcribe::{TranscribeOptions, Transcriber};
use std::path::PathBuf;
use std::time::Instant;

/// Transcribe audio files with a Whisper model and print one line per file.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft transcribe --model whisper-tiny-en talk.wav\n  \
graft transcribe --model whisper-base de.wav es.wav --json\n  \
graft transcribe --model whisper-base interview.wav --language de --beam-size 1\n  \
graft transcribe --model whisper-base --manifest data/speech/test_sentences.jsonl --beam-size 1 --json > hyp.jsonl\n  \
graft transcribe --model whisper-base --adapter runs/speech-de/adapter de.wav --language de\n\n\
WAV files of any rate and channel count are read, resampled to 16 kHz mono and cut into\n\
consecutive 30-second windows, each decoded without timestamps (greedy with --beam-size 1,\n\
else beam search as CTranslate2 runs it) and the texts joined. A multilingual model without\n\
--language detects the language on each file's first window; English-only (.en) models take\n\
only --language en. --json prints one object per file per line: audio, language,\n\
language_probability (null when given), text, tokens, duration_s, decode_s (reading, features,\n\
encoder and decoding; not the model load) and rtf (decode_s / duration_s). With --manifest\n\
every clip is decoded in its line's language (English-only models: in English) and `audio` is\n\
the manifest's, so the --json output scores with `graft speech score --hypotheses`.")]
pub struct TranscribeArgs {
    /// Audio files (WAV).
    #[arg(required_unless_present = "manifest")]
    audio: Vec<PathBuf>,
    /// Transcribe every clip of a speech manifest (JSONL lines with `audio`, `text`, `language`,
    /// as `graft data build speech` writes them) in its line's language; the printed `audio` is
    /// the manifest's, so `--json` output is a hypotheses file for `graft speech score`.
    #[arg(long, conflicts_with_all = ["audio", "language"])]
    manifest: Option<PathBuf>,
    /// With --manifest: only clips of these language codes (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "manifest")]
    languages: Vec<String>,
    /// With --manifest: at most this many clips per language, the first ones (0 = all).
    #[arg(long, default_value_t = 0, requires = "manifest")]
    limit_per_language: usize,
    /// The model: a speech-model asset (`whisper-tiny-en`, `whisper-base`) or a CTranslate2
    /// Whisper folder.
    #[arg(long)]
    model: String,
    /// Language code of the speech (`en`, `de`, ...); detected per file when left out.
    #[arg(long)]
    language: Option<String>,
    /// Beams of beam search (1 = greedy decoding).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Most tokens generated per 30-second window (CTranslate2's limit for its default
    /// max_length of 448).
    #[arg(long, default_value_t = 224)]
    max_new_tokens: usize,
    /// What `graft speech train` trained: its LoRA adapter folder (`RUN/adapter`, PEFT format) or
    /// its trained weights (`RUN/trained.safetensors`), applied to --model before transcribing.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Never download: fail if the model is not in the cache.
    #[arg(long)]
    offline: bool,
    /// Print one JSON object per file per line (JSONL).
    #[arg(long)]
    json: bool,
}

/// Runs `graft transcribe`.
pub fn run(args: TranscribeArgs) -> Result<()> {
    if args.beam_size == 0 {
        super::bail_input!("--beam-size must be at least 1");
    }
    if args.max_new_tokens == 0 {
        super::bail_input!("--max-new-tokens must be at least 1");
    }
    // (printed name, file, language) of every input.
    let inputs: Vec<(String, PathBuf, Option<String>)> = match &args.manifest {
        Some(m) => graft::speech::train_set::read_clips(m, &args.languages, args.limit_per_language)?
            .into_iter()
            .map(|c| (c.key, c.path, Some(c.language)))
            .collect(),
        None => args.audio.iter().map(|p| (p.display().to_string(), p.clone(), args.language.clone())).collect(),
    };
    if let Some((_, missing, _)) = inputs.iter().find(|(_, p, _)| !p.is_file()) {
        super::bail_input!("audio file {} does not exist (or is not a file)", missing.display());
    }
    let device = graft::device::parse_device(&args.device)?;
    let start = Instant::now();
    let dir = graft::assets::resolve_speech_model(&args.model, args.offline)?;
    let mut model = Transcriber::open(&dir, &device, candle_core::DType::F32)
        .with_context(|| format!("loading speech model {}", dir.display()))?;
    if let Some(adapter) = &args.adapter {
        model.apply_trained(adapter).with_context(|| format!("applying {}", adapter.display()))?;
    }
    model.check_language(args.language.as_deref())?;
    eprintln!("loaded {} in {:.1}s", args.model, start.elapsed().as_secs_f64());

    let n = inputs.len();
    let (mut total_audio, mut total_decode) = (0.0, 0.0);
    for (i, (name, path, language)) in inputs.iter().enumerate() {
        let language = if model.multilingual() { language.clone() } else { None };
        let opts = TranscribeOptions { language, beam_size: args.beam_size, max_new_tokens: args.max_new_tokens };
        let t0 = Instant::now();
        let samples = load_audio(path)?;
        let duration_s = samples.len() as f64 / f64::from(graft::speech::audio::SAMPLE_RATE);
        let t = model.transcribe(&samples, &opts).with_context(|| format!("transcribing {}", path.display()))?;
        let decode_s = t0.elapsed().as_secs_f64();
        let rtf = if duration_s > 0.0 { decode_s / duration_s } else { 0.0 };
        total_audio += duration_s;
        total_decode += decode_s;
        if args.json {
            let row = serde_json::json!({
                "audio": name,
                "language": t.language,
                "language_probability": t.language_probability,
                "text": t.text,
                "tokens": t.tokens,
                "duration_s": duration_s,
                "decode_s": decode_s,
                "rtf": rtf,
            });
            println!("{row}");
        } else {
            let lang = match t.language_probability {
                Some(p) => format!("{} ({:.2})", t.language, p),
                None => t.language.clone(),
            };
            println!("{name}\t{lang}\t{}", t.text);
        }
        if n > 1 {
            eprintln!("[{}/{n}] {name}: {duration_s:.1}s of audio in {decode_s:.2}s (RTF {rtf:.3})", i + 1);
        }
    }
    if n > 1 && total_audio > 0.0 {
        eprintln!(
            "{n} files, {total_audio:.1}s of audio in {total_decode:.1}s (RTF {:.3})",
            total_decode / total_audio
        );
    }
    Ok(())
}
