//! `graft data build speech`: a multilingual speech set — real sentences per language
//! ([`crate::speech::sentences`]) spoken by espeak-ng with varied voices, speeds and pitches
//! ([`crate::speech::synth`]) — with held-out sentences and held-out voices.
//!
//! Per language, the seeded sentence order gives the first `test` sentences to the tests and the
//! next `per_language` to training; one voice variant (`+f3`, ...) drawn with the seed is kept
//! out of training. Three manifests: `train.jsonl` (training sentences, training voices),
//! `test_sentences.jsonl` (held-out sentences, training voices) and `test_voices.jsonl` (the same
//! held-out sentences, spoken by the held-out variant), one line per clip. Every draw comes
//! from its own seeded stream (per language, split and clip), so a build is the same whatever
//! the threads do, and asking for more training sentences leaves the tests unchanged.
//!
//! Everything is written into a work folder beside `out` and renamed into place at the end:
//! a failed or killed build leaves no folder that looks complete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::datasets::task_files;
use crate::speech::sentences::{self, sub_seed, Language, LanguageSentences};
use crate::speech::synth::{self, Voice, VARIANTS};
use crate::{GraftError, Result};

/// The manifests, in the order they are written.
pub const SPLITS: [&str; 3] = ["train", "test_sentences", "test_voices"];

/// Most threads that run espeak-ng at once.
pub const MAX_THREADS: usize = 2;

/// What a speech build makes.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechOptions {
    /// Language codes ([`sentences::LANGUAGES`]), in manifest order.
    pub languages: Vec<String>,
    /// Training sentences per language (fewer when the language has fewer).
    pub per_language: usize,
    /// Held-out sentences per language (each in `test_sentences` and `test_voices`).
    pub test: usize,
    /// Seed of every draw: sentence order, held-out variant, voice, speed and pitch.
    pub seed: u64,
    /// AppStream component files the sentences come from.
    pub sources: Vec<PathBuf>,
}

impl Default for SpeechOptions {
    /// German, Spanish, French, Italian and Portuguese; 300 training and 100 test sentences
    /// each; seed 42; no sources (give them, e.g. [`crate::datasets::appstream::default_files`]).
    fn default() -> Self {
        Self {
            languages: ["de", "es", "fr", "it", "pt"].map(String::from).to_vec(),
            per_language: 300,
            test: 100,
            seed: 42,
            sources: Vec::new(),
        }
    }
}

/// One language's part of a build.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageSummary {
    /// Usable sentences found (after cleaning and deduplication).
    pub sentences: usize,
    /// Candidate texts seen.
    pub candidates: usize,
    /// Candidates left out, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Clips per manifest.
    pub clips: BTreeMap<String, usize>,
    /// The voice variant kept out of training (`f3`).
    pub held_out_variant: String,
    /// Seconds of audio in all its clips.
    pub duration_s: f64,
}

/// One manifest's part of a build.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitSummary {
    /// Clips.
    pub clips: usize,
    /// Seconds of audio.
    pub duration_s: f64,
    /// The espeak-ng voices spoken with (`de+m3`), sorted.
    pub voices: BTreeSet<String>,
}

/// What a speech build wrote (also `summary.json` in the output folder).
#[derive(Debug, Clone, Serialize)]
pub struct SpeechSummary {
    /// `speech`.
    pub dataset: String,
    /// The folder written.
    pub out: PathBuf,
    /// The seed used.
    pub seed: u64,
    /// espeak-ng's version.
    pub espeak_ng: String,
    /// Sample rate of every clip (16,000 Hz).
    pub sample_rate: u32,
    /// Per language code.
    pub languages: BTreeMap<String, LanguageSummary>,
    /// Per manifest (`train`, `test_sentences`, `test_voices`).
    pub splits: BTreeMap<String, SplitSummary>,
    /// Lines per manifest file name.
    pub files: BTreeMap<String, usize>,
    /// All clips.
    pub clips: usize,
    /// Seconds of audio in all clips.
    pub duration_s: f64,
}

/// One clip to make.
struct Job {
    language: &'static str,
    split: &'static str,
    text: String,
    voice: Voice,
    /// Path relative to the output folder.
    audio: String,
}

/// The jobs of one language: training clips, then the held-out sentences with training voices,
/// then the same sentences with the held-out variant.
fn language_jobs(lang: &Language, found: &LanguageSentences, opts: &SpeechOptions) -> Result<(Vec<Job>, &'static str)> {
    let n = found.sentences.len();
    if n <= opts.test {
        return Err(GraftError::Input(format!(
            "{} ({}): {n} usable sentences in the AppStream metadata, but --test {} needs at least {} \
             (one for training)",
            lang.name,
            lang.code,
            opts.test,
            opts.test + 1
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(opts.seed, &format!("{}/held-out-variant", lang.code)));
    let held_out = VARIANTS[rng.random_range(0..VARIANTS.len())];
    let seen: Vec<&'static str> = VARIANTS.iter().copied().filter(|v| *v != held_out).collect();
    let (test, rest) = found.sentences.split_at(opts.test);
    let train = &rest[..rest.len().min(opts.per_language)];
    let mut jobs = Vec::new();
    for (split, texts, variants) in
        [("train", train, &seen[..]), ("test_sentences", test, &seen[..]), ("test_voices", test, &[held_out][..])]
    {
        for (i, text) in texts.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(opts.seed, &format!("{}/{split}/{i}", lang.code)));
            jobs.push(Job {
                language: lang.code,
                split,
                text: text.clone(),
                voice: Voice::draw(&mut rng, lang.espeak_voices, variants),
                audio: format!("audio/{}/{split}-{i:05}.wav", lang.code),
            });
        }
    }
    Ok((jobs, held_out))
}

/// Refuses an output folder that holds anything but an earlier speech build (which is replaced).
fn check_out(out: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        return if out.exists() {
            Err(GraftError::Input(format!("{} exists and is not a folder", out.display())))
        } else {
            Ok(())
        };
    };
    let earlier = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["dataset"] == "speech");
    if entries.next().is_none() || earlier {
        return Ok(());
    }
    Err(GraftError::Input(format!(
        "{} holds other files: give an empty or new folder (an earlier speech build there is replaced)",
        out.display()
    )))
}

/// Synthesises every job into `stage` on up to [`MAX_THREADS`] threads; returns each clip's
/// duration in job order. The first failure stops the others and is returned.
fn synthesise(jobs: &[Job], stage: &Path, on_note: &mut dyn FnMut(String)) -> Result<Vec<f64>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<f64>)>();
    let mut durations = vec![0.0; jobs.len()];
    let mut failure = None;
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (tx, next, stop) = (tx.clone(), &next, &stop);
            scope.spawn(move || {
                let scratch = stage.join(format!(".espeak-{worker}.wav"));
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let result = synth::speak(&job.text, &job.voice, &stage.join(&job.audio), &scratch);
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let step = (jobs.len() / 10).max(25);
        for (done, (i, result)) in rx.iter().enumerate() {
            match result {
                Ok(d) => durations[i] = d,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
            if (done + 1) % step == 0 || done + 1 == jobs.len() {
                on_note(format!("speech: {}/{} clips", done + 1, jobs.len()));
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(durations),
    }
}

/// Builds the speech set into `out` (see the module documentation); `on_note` gets progress.
pub fn build_speech(opts: &SpeechOptions, out: &Path, on_note: &mut dyn FnMut(String)) -> Result<SpeechSummary> {
    if opts.languages.is_empty() {
        return Err(GraftError::Input("give at least one language (--languages de,es,...)".into()));
    }
    if opts.per_language == 0 || opts.test == 0 {
        return Err(GraftError::Input(
            "the speech build needs at least 1 training and 1 test sentence per language".into(),
        ));
    }
    if opts.sources.is_empty() {
        return Err(GraftError::Input("no AppStream file given".into()));
    }
    let mut langs: Vec<&'static Language> = Vec::new();
    for code in &opts.languages {
        let lang = sentences::language(code.trim())?;
        if !langs.contains(&lang) {
            langs.push(lang);
        }
    }
    check_out(out)?;
    let espeak_ng = synth::version()?;
    on_note(format!(
        "reading sentences for {} from {} AppStream file(s)",
        opts.languages.join(","),
        opts.sources.len()
    ));
    let found = sentences::read_sentences(&opts.sources, &langs, opts.seed)?;
    let mut jobs = Vec::new();
    let mut held_out = Vec::new();
    for (lang, f) in langs.iter().zip(&found) {
        let (j, v) = language_jobs(lang, f, opts)?;
        on_note(format!(
            "{}: {} sentences ({} candidates); {} clips, held-out variant +{v}",
            lang.code,
            f.sentences.len(),
            f.candidates,
            j.len()
        ));
        jobs.extend(j);
        held_out.push(v);
    }

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| GraftError::io(&parent, e))?;
    let name = out.file_name().map_or("speech".into(), |n| n.to_string_lossy().into_owned());
    let work = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(|e| GraftError::io(&parent, e))?;
    let stage = work.path().join("stage");
    for lang in &langs {
        let dir = stage.join("audio").join(lang.code);
        std::fs::create_dir_all(&dir).map_err(|e| GraftError::io(&dir, e))?;
    }
    let durations = synthesise(&jobs, &stage, on_note)?;

    let mut splits: BTreeMap<String, SplitSummary> =
        SPLITS.iter().map(|s| (s.to_string(), Default::default())).collect();
    let mut languages = BTreeMap::new();
    for ((lang, f), v) in langs.iter().zip(&found).zip(&held_out) {
        let clips = SPLITS.iter().map(|s| (s.to_string(), 0)).collect();
        let summary = LanguageSummary {
            sentences: f.sentences.len(),
            candidates: f.candidates,
            skipped: f.skipped.clone(),
            clips,
            held_out_variant: v.to_string(),
            duration_s: 0.0,
        };
        languages.insert(lang.code.to_string(), summary);
    }
    let mut files = BTreeMap::new();
    for split in SPLITS {
        let lines: Vec<serde_json::Value> = jobs
            .iter()
            .zip(&durations)
            .filter(|(j, _)| j.split == split)
            .map(|(j, &d)| {
                let s = splits.entry(split.to_string()).or_default();
                s.clips += 1;
                s.duration_s += d;
                s.voices.insert(j.voice.name.clone());
                if let Some(l) = languages.get_mut(j.language) {
                    *l.clips.entry(split.to_string()).or_default() += 1;
                    l.duration_s += d;
                }
                json!({
                    "audio": j.audio,
                    "text": j.text,
                    "language": j.language,
                    "voice": j.voice.name,
                    "speed": j.voice.speed,
                    "pitch": j.voice.pitch,
                    "duration_s": d,
                })
            })
            .collect();
        let file = format!("{split}.jsonl");
        files.insert(file.clone(), task_files::write_jsonl(&stage.join(&file), lines)?);
    }
    let summary = SpeechSummary {
        dataset: "speech".into(),
        out: out.to_path_buf(),
        seed: opts.seed,
        espeak_ng,
        sample_rate: crate::speech::audio::SAMPLE_RATE,
        languages,
        splits,
        files,
        clips: jobs.len(),
        duration_s: durations.iter().sum(),
    };
    let path = stage.join("summary.json");
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&path, text + "\n").map_err(|e| GraftError::io(&path, e))?;
    crate::assets::cache::install(&stage, out, work.path())?;
    Ok(summary)
}
