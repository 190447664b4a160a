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
graft transcribe --model whisper-base interview.wav --language de --beam-size 1\n\n\
WAV files of any rate and channel count are read, resampled to 16 kHz mono and cut into\n\
consecutive 30-second windows, each decoded without timestamps (greedy with --beam-size 1,\n\
else beam search as CTranslate2 runs it) and the texts joined. A multilingual model without\n\
--language detects the language on each file's first window; English-only (.en) models take\n\
only --language en. --json prints one object per file per line: audio, language,\n\
language_probability (null when given), text, tokens, duration_s, decode_s (reading, features,\n\
encoder and decoding; not the model load) and rtf (decode_s / duration_s).")]
pub struct TranscribeArgs {
    /// Audio files (WAV).
    #[arg(required = true)]
    audio: Vec<PathBuf>,
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
    super::generate::pin_cpu_threads();
    if args.beam_size == 0 {
        super::bail_input!("--beam-size must be at least 1");
    }
    if args.max_new_tokens == 0 {
        super::bail_input!("--max-new-tokens must be at least 1");
    }
    if let Some(missing) = args.audio.iter().find(|p| !p.is_file()) {
        super::bail_input!("audio file {} does not exist (or is not a file)", missing.display());
    }
    let device = graft::device::parse_device(&args.device)?;
    let start = Instant::now();
    let dir = graft::assets::resolve_speech_model(&args.model, args.offline)?;
    let model = Transcriber::open(&dir, &device, candle_core::DType::F32)
        .with_context(|| format!("loading speech model {}", dir.display()))?;
    model.check_language(args.language.as_deref())?;
    eprintln!("loaded {} in {:.1}s", args.model, start.elapsed().as_secs_f64());

    let opts = TranscribeOptions {
        language: args.language.clone(),
        beam_size: args.beam_size,
        max_new_tokens: args.max_new_tokens,
    };
    let n = args.audio.len();
    let (mut total_audio, mut total_decode) = (0.0, 0.0);
    for (i, path) in args.audio.iter().enumerate() {
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
                "audio": path.display().to_string(),
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
            println!("{}\t{lang}\t{}", path.display(), t.text);
        }
        if n > 1 {
            eprintln!("[{}/{n}] {}: {duration_s:.1}s of audio in {decode_s:.2}s (RTF {rtf:.3})", i + 1, path.display());
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
