//! `graft speech train`: fine-tunes a Whisper model (LoRA or full, on the decoder and/or the
//! encoder) on a speech manifest through the one trainer, and transcribes and scores held-out
//! manifests before and after, so every run reports its gain and its forgetting.
//!
//! 1. The clips of `data.train` and `data.eval` become training sequences
//!    ([`crate::speech::train_set`]); their audio becomes encoder input once: encoder states when
//!    the encoder is frozen, log-mel when it trains ([`EncoderInput`]).
//! 2. `data.eval` and every `data.score` manifest are transcribed (greedy or beam search, each
//!    clip in its manifest language) and scored (WER, CER, bootstrap intervals).
//! 3. The trainer runs [`TranscriptObjective`] (evaluation: the held-out transcript loss;
//!    checkpoints and exact resume as for every technique).
//! 4. The same manifests are transcribed and scored again; the adapter (PEFT format) or the
//!    trained weights, the hypotheses and `summary.json` are written.

pub mod config;

use crate::adapters::lora::{self, LoraSet};
use crate::models::whisper::Pass;
use crate::objectives::transcript::{mean_transcript_nll, EncoderInput, TranscriptObjective};
use crate::speech::audio::{load_audio, read_wav, SAMPLE_RATE};
use crate::speech::encoder_cache::EncoderCache;
use crate::speech::score::{score, BootstrapOptions, ScoreReport, Utterance};
use crate::speech::train_set::{read_clips, target_sequence, SpeechClip, TargetSequence};
use crate::speech::transcribe::{TranscribeOptions, Transcriber};
use crate::train::{Epochs, Evaluation, Event, Trainer};
use crate::{GraftError, Result};
use candle_core::Tensor;
use config::{SpeechAdapter, SpeechAdapterKind, SpeechTrainConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `graft speech train` measured, written to `output.dir/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SpeechTrainSummary {
    /// The model (`model.name`).
    pub model: String,
    /// What trained.
    pub adapter: SpeechAdapter,
    /// Training clips and their audio in seconds.
    pub train_clips: usize,
    /// Seconds of training audio.
    pub train_audio_s: f64,
    /// Clips of `data.eval`.
    pub eval_clips: usize,
    /// Whether the encoder trained (every step ran it) or stayed frozen (its states computed
    /// once per clip).
    pub encoder_trained: bool,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Optimizer steps done.
    pub steps: u64,
    /// Supervised tokens trained on.
    pub tokens: u64,
    /// Seconds spent reading audio and computing encoder input before training.
    pub prepare_s: f64,
    /// Training wall time in seconds (summed over every part of an interrupted and resumed run).
    pub train_s: f64,
    /// Seconds spent transcribing the scored manifests, before and after together.
    pub score_s: f64,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: Option<f64>,
    /// Held-out transcript loss before training.
    pub base_eval_loss: f64,
    /// Held-out transcript loss after training.
    pub final_eval_loss: f64,
    /// Per scored manifest (`eval`, then each `data.score` by file name): scores before and
    /// after training.
    pub scores: BTreeMap<String, SetScores>,
    /// Where the adapter (PEFT folder) or the trained weights were written.
    pub output: PathBuf,
}

/// One scored manifest before and after training.
#[derive(Debug, Clone, Serialize)]
pub struct SetScores {
    /// The manifest.
    pub manifest: PathBuf,
    /// Clips transcribed.
    pub clips: usize,
    /// WER and CER of the model before training.
    pub before: ScoreReport,
    /// WER and CER after training.
    pub after: ScoreReport,
    /// The transcripts before training (`{"audio", "text"}` lines, for `graft speech score`).
    pub before_hypotheses: PathBuf,
    /// The transcripts after training.
    pub after_hypotheses: PathBuf,
}

/// A manifest to transcribe and score: its name in the summary, file and clips.
struct ScoredSet {
    name: String,
    manifest: PathBuf,
    clips: Vec<SpeechClip>,
}

/// Names for the scored manifests: `eval`, then each file's stem (with its folder when two
/// stems are equal).
fn scored_sets(cfg: &SpeechTrainConfig, eval: Vec<SpeechClip>) -> Result<Vec<ScoredSet>> {
    let mut sets = vec![ScoredSet { name: "eval".into(), manifest: cfg.data.eval.clone(), clips: eval }];
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for path in &cfg.data.score {
        let keep = &cfg.data.score_languages;
        let mut clips = read_clips(path, &[], cfg.data.eval_limit)?;
        clips.retain(|c| keep.is_empty() || keep.contains(&c.language));
        if clips.is_empty() {
            continue;
        }
        let clash = cfg.data.score.iter().filter(|q| stem(q) == stem(path)).count() > 1 || stem(path) == "eval";
        let name = match (clash, path.parent().and_then(|p| p.file_name())) {
            (true, Some(folder)) => format!("{}/{}", folder.to_string_lossy(), stem(path)),
            _ => stem(path),
        };
        if sets.iter().any(|s| s.name == name) {
            return Err(GraftError::Input(format!("data.score lists {} twice", path.display())));
        }
        sets.push(ScoredSet { name, manifest: path.clone(), clips });
    }
    for code in &cfg.data.score_languages {
        if !sets[1..].iter().any(|s| s.clips.iter().any(|c| &c.language == code)) {
            return Err(GraftError::Input(format!("data.score_languages: no scored manifest has a `{code}` clip")));
        }
    }
    Ok(sets)
}

/// The encoder input of `clips`, with the seconds of audio read: log-mel when `states` is `None`
/// (the encoder trains), else encoder states through the inference kernels, read from and
/// written to the cache it holds, if any. Progress goes to `on_event` as notes.
fn encoder_input(
    tr: &Transcriber,
    clips: &[SpeechClip],
    states: Option<Option<&EncoderCache>>,
    what: &str,
    on_event: &mut dyn FnMut(Event),
) -> Result<(EncoderInput, f64)> {
    let mut items = Vec::with_capacity(clips.len());
    let (mut seconds, mut hits) = (0.0, 0);
    let start = Instant::now();
    for (i, clip) in clips.iter().enumerate() {
        let mel = |seconds: &mut f64| -> Result<Tensor> {
            let samples = load_audio(&clip.path)?;
            *seconds += samples.len() as f64 / f64::from(SAMPLE_RATE);
            tr.window_mel(&samples).map_err(|e| GraftError::Input(format!("{}: {e}", clip.key)))
        };
        items.push(match states {
            None => mel(&mut seconds)?,
            Some(None) => tr.model().encode(&mel(&mut seconds)?, Pass::Infer)?,
            Some(Some(cache)) => {
                let mut computed_s = 0.0;
                let (t, hit) =
                    cache.get_or_compute(&clip.path, || tr.model().encode(&mel(&mut computed_s)?, Pass::Infer))?;
                seconds += if hit { read_wav(&clip.path)?.duration_s() } else { computed_s };
                hits += usize::from(hit);
                t
            }
        });
        if (i + 1) % 50 == 0 || i + 1 == clips.len() {
            on_event(Event::Note(format!(
                "{what}: {} {}/{} clips{} ({:.0}s)",
                if states.is_some() { "encoded" } else { "read" },
                i + 1,
                clips.len(),
                if hits > 0 { format!(", {hits} from the encoder cache") } else { String::new() },
                start.elapsed().as_secs_f64()
            )));
        }
    }
    let states = states.is_some();
    Ok((if states { EncoderInput::States(items) } else { EncoderInput::Mels(items) }, seconds))
}

/// Transcribes every clip of `set` (its encoder input `input`) in the clip's language and
/// scores the transcripts; writes them as `{"audio", "text"}` lines to `hypotheses`.
fn transcribe_and_score(
    tr: &Transcriber,
    set: &ScoredSet,
    input: &EncoderInput,
    cfg: &SpeechTrainConfig,
    hypotheses: &Path,
) -> Result<ScoreReport> {
    let opts = TranscribeOptions {
        language: None,
        beam_size: cfg.decode.beam_size,
        max_new_tokens: cfg.decode.max_new_tokens,
    };
    let mut utterances = Vec::with_capacity(set.clips.len());
    let mut lines = String::new();
    for (i, clip) in set.clips.iter().enumerate() {
        let audio = input.states(tr.model(), &[i], Pass::Infer)?;
        let ids = tr.decode_encoded(&audio, Some(&clip.language), &opts)?;
        let text = tr.decode_text(&ids)?.trim().to_string();
        lines.push_str(&serde_json::json!({"audio": clip.key, "text": text}).to_string());
        lines.push('\n');
        utterances.push(Utterance { language: clip.language.clone(), reference: clip.text.clone(), hypothesis: text });
    }
    crate::io::write_atomic(hypotheses, &lines)?;
    score(&utterances, &BootstrapOptions { resamples: cfg.decode.resamples, seed: cfg.train.seed })
}

/// Every scored manifest transcribed and scored by the model as it is now (`stage` is `before`
/// or `after`); hypotheses go to `out/hypotheses/NAME.STAGE.jsonl`.
fn score_all(
    tr: &Transcriber,
    sets: &[ScoredSet],
    inputs: &[EncoderInput],
    cfg: &SpeechTrainConfig,
    stage: &str,
    on_event: &mut dyn FnMut(Event),
) -> Result<Vec<(ScoreReport, PathBuf)>> {
    let dir = cfg.output.dir.join("hypotheses");
    std::fs::create_dir_all(&dir).map_err(|e| GraftError::io(&dir, e))?;
    let mut out = Vec::with_capacity(sets.len());
    for (set, input) in sets.iter().zip(inputs) {
        let path = dir.join(format!("{}.{stage}.jsonl", set.name.replace('/', "_")));
        let start = Instant::now();
        let report = transcribe_and_score(tr, set, input, cfg, &path)?;
        on_event(Event::Note(format!(
            "{stage}: {} ({} clips) WER {:.1} % [{:.1}, {:.1}], CER {:.1} % ({:.0}s)",
            set.name,
            set.clips.len(),
            100.0 * report.overall.wer,
            100.0 * report.overall.wer_ci95[0],
            100.0 * report.overall.wer_ci95[1],
            100.0 * report.overall.cer,
            start.elapsed().as_secs_f64()
        )));
        out.push((report, path));
    }
    Ok(out)
}

/// Micro-batches of clip indices for `epoch`: `0..n` shuffled by `(seed, epoch)`, in chunks of
/// `batch_size`.
fn epoch_batches(n: usize, batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    crate::data::shuffle(&mut order, seed, epoch);
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// The training sequences of `clips`.
fn sequences(tr: &Transcriber, clips: &[SpeechClip]) -> Result<Vec<TargetSequence>> {
    let max_len = tr.model().dims.text_ctx;
    clips.iter().map(|c| target_sequence(tr.tokens(), tr.tokenizer(), c, tr.multilingual(), max_len)).collect()
}

/// Runs the config (see the module documentation); with `resume`, continues from the newest good
/// checkpoint in `output.dir`.
pub fn run(cfg: &SpeechTrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<SpeechTrainSummary> {
    cfg.validate()?;
    let run_dir = super::finetune::open_run_dir(cfg, &cfg.output.dir, resume, cfg.train.save_every)?;
    let device = crate::device::parse_device(&cfg.model.device)?;
    let dtype = crate::device::parse_dtype(&cfg.model.dtype)?;
    let folder = crate::assets::resolve_speech_model(&cfg.model.name, cfg.model.offline)?;
    let mut tr = Transcriber::open(&folder, &device, dtype)?;

    let train = read_clips(&cfg.data.train, &cfg.data.languages, cfg.data.train_limit)?;
    let eval = read_clips(&cfg.data.eval, &cfg.data.languages, cfg.data.eval_limit)?;
    if !tr.multilingual() {
        on_event(Event::Note(format!(
            "{} is English-only: every clip is trained and transcribed with the English prompt",
            cfg.model.name
        )));
    }
    let (train_seqs, eval_seqs) = (sequences(&tr, &train)?, sequences(&tr, &eval)?);
    let sets = scored_sets(cfg, eval)?;
    let encoder_trained = cfg.trains_encoder(&tr.model().linear_names());
    let cache = match (&cfg.data.encoder_cache, encoder_trained) {
        (Some(dir), false) => Some(EncoderCache::open(dir, &folder, &device, dtype)?),
        _ => None,
    };
    let states = (!encoder_trained).then_some(cache.as_ref());

    // Encoder input of every clip, computed once.
    let prepare = Instant::now();
    let (train_input, train_audio_s) = encoder_input(&tr, &train, states, "train", on_event)?;
    let mut set_inputs = Vec::with_capacity(sets.len());
    for set in &sets {
        set_inputs.push(encoder_input(&tr, &set.clips, states, &set.name, on_event)?.0);
    }
    let prepare_s = prepare.elapsed().as_secs_f64();

    // Scores before training.
    let score_start = Instant::now();
    let before = score_all(&tr, &sets, &set_inputs, cfg, "before", on_event)?;
    let mut score_s = score_start.elapsed().as_secs_f64();

    // What trains.
    let (lora, vars) = match cfg.adapter.kind {
        SpeechAdapterKind::Lora => {
            let set = lora::attach(tr.model_mut(), &cfg.adapter.lora_spec(), cfg.train.seed)?;
            let vars = set.named_vars();
            (Some(set), vars)
        }
        SpeechAdapterKind::Full => {
            let targets = &cfg.adapter.targets;
            let vars = tr
                .model_mut()
                .make_projections_trainable(|n| targets.iter().any(|p| crate::adapters::targets::matches(p, n)))?;
            if vars.is_empty() {
                // Nothing matched: `select` explains how the names look.
                crate::adapters::targets::select(targets, &tr.model().linear_names()).map_err(GraftError::Input)?;
            }
            (None, vars)
        }
    };
    on_event(Event::Note(format!(
        "training {} clips ({:.1} min of audio), encoder {}",
        train.len(),
        train_audio_s / 60.0,
        if encoder_trained { "trained (run at every step)" } else { "frozen (states computed once)" }
    )));

    // Train.
    let pad = tr.tokens().eot;
    let eval_input = &set_inputs[0];
    let all_eval: Vec<usize> = (0..eval_seqs.len()).collect();
    let mut eval_batches: Vec<Vec<usize>> = all_eval.chunks(cfg.train.batch_size).map(<[usize]>::to_vec).collect();
    if cfg.train.eval_batches > 0 {
        eval_batches.truncate(cfg.train.eval_batches);
    }
    let mut batches = Epochs::new(|epoch| Ok(epoch_batches(train.len(), cfg.train.batch_size, cfg.train.seed, epoch)))?;
    let settings = super::parts::loop_settings(&cfg.train, batches.per_epoch());
    let clock = lora.as_ref().map(|s: &LoraSet| s.clock.clone());
    let outcome = {
        let model = tr.model();
        let objective = TranscriptObjective::new(model, &train_seqs, &train_input, pad, vars.clone(), clock);
        let mut evaluate =
            || mean_transcript_nll(model, &eval_seqs, eval_input, &eval_batches, pad).map(Evaluation::from);
        let trainer = Trainer {
            settings,
            optimizer: super::parts::optimizer_kind(&cfg.train),
            run_dir: Some(run_dir),
            evaluate: Some(&mut evaluate),
        };
        trainer.run(&objective, &mut batches, on_event)?
    };
    let run = outcome.summary();
    let (Some(base_eval_loss), Some(final_eval_loss)) = (run.base_eval_loss, run.final_eval_loss) else {
        return Err(GraftError::Input("internal: the run was not evaluated".into()));
    };

    // Scores after training: cached encoder states are still exact (the encoder did not
    // train); log-mel inputs go through the trained encoder.
    let score_start = Instant::now();
    let after = score_all(&tr, &sets, &set_inputs, cfg, "after", on_event)?;
    score_s += score_start.elapsed().as_secs_f64();

    let output = save_trained(cfg, lora.as_ref(), &vars)?;
    let scores = sets
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(set, ((before, before_hypotheses), (after, after_hypotheses)))| {
            let s = SetScores {
                manifest: set.manifest.clone(),
                clips: set.clips.len(),
                before,
                after,
                before_hypotheses,
                after_hypotheses,
            };
            (set.name.clone(), s)
        })
        .collect();
    let summary = SpeechTrainSummary {
        model: cfg.model.name.clone(),
        adapter: cfg.adapter.clone(),
        train_clips: train.len(),
        train_audio_s,
        eval_clips: eval_seqs.len(),
        encoder_trained,
        trainable_params: run.trainable_params,
        steps: run.steps,
        tokens: run.units,
        prepare_s,
        train_s: run.wall_time_s,
        score_s,
        peak_rss_mb: crate::bench::memory::peak_rss_bytes().map(|b| b as f64 / 1e6),
        base_eval_loss,
        final_eval_loss,
        scores,
        output,
    };
    crate::io::write_atomic(&cfg.output.dir.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

/// Writes what trained: the LoRA adapter as a PEFT folder `adapter/`, or the trained weights
/// (Hugging Face names) as `trained.safetensors`; returns the path.
fn save_trained(
    cfg: &SpeechTrainConfig,
    lora: Option<&LoraSet>,
    vars: &[(String, candle_core::Var)],
) -> Result<PathBuf> {
    if let Some(set) = lora {
        let dir = cfg.output.dir.join("adapter");
        crate::io::peft::save_seq2seq_lora(set, &dir, &cfg.model.name)?;
        return Ok(dir);
    }
    let path = cfg.output.dir.join("trained.safetensors");
    let tensors: std::collections::HashMap<String, Tensor> =
        vars.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().contiguous()?))).collect::<Result<_>>()?;
    let tmp = cfg.output.dir.join(".trained.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| GraftError::io(&path, e))?;
    Ok(path)
}
