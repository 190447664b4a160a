//! Transcribing audio with a CTranslate2 Whisper folder: 16 kHz samples are cut into
//! consecutive 30-second windows (no timestamps, no overlap), each window's log-mel is encoded
//! and decoded (greedy or beam search, Whisper's token suppression) with the transcribe prompt
//! without timestamps, and the windows' texts are joined. A multilingual model without a given
//! language detects it on the first window and keeps it for the whole file.

use std::path::Path;

use candle_core::{DType, Device};
use serde::Serialize;

use super::beam::{beam_search, BeamOptions};
use super::decode::{detect_language, folder_tokens, greedy, GreedyOptions, WhisperTokens};
use super::mel::{LogMel, N_SAMPLES};
use crate::io::ctranslate2::whisper::{WhisperConfig, WhisperFolder};
use crate::models::whisper::{HfWhisperFolder, Pass, Whisper};
use crate::tokenizer::TokenizerError;
use crate::{GraftError, Result};

/// The smallest vocabulary of a multilingual Whisper model (CTranslate2's `is_multilingual`):
/// English-only models have 51,864 tokens.
const MULTILINGUAL_VOCAB: usize = 51_865;

/// How to decode each window.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeOptions {
    /// The language code (`de`); `None` detects it (multilingual models) or means English
    /// (English-only models).
    pub language: Option<String>,
    /// Beams of beam search; 1 is greedy decoding.
    pub beam_size: usize,
    /// Most tokens generated per 30-second window (end of text not counted).
    pub max_new_tokens: usize,
}

/// The transcript of one audio.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    /// The language code the text was decoded in (`en` for English-only models).
    pub language: String,
    /// The detected language's probability; `None` when the language was given or the model
    /// is English-only.
    pub language_probability: Option<f32>,
    /// The windows' texts joined, without leading and trailing spaces.
    pub text: String,
    /// The generated token ids of every window, in order (no prompts, no end of text).
    pub tokens: Vec<u32>,
    /// How many 30-second windows were decoded.
    pub windows: usize,
}

/// A loaded Whisper model with what transcription needs.
pub struct Transcriber {
    model: Whisper,
    config: WhisperConfig,
    tokens: WhisperTokens,
    tokenizer: tokenizers::Tokenizer,
    tokenizer_json: std::path::PathBuf,
    mel: LogMel,
}

impl Transcriber {
    /// Loads the Whisper folder `dir` onto `device` in `dtype`: a CTranslate2 folder (with
    /// `model.bin`) or a Hugging Face one (`config.json` and `model.safetensors`).
    pub fn open(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let load_tokenizer = |path: &Path| {
            tokenizers::Tokenizer::from_file(path)
                .map_err(|e| TokenizerError::File { path: path.to_path_buf(), reason: format!("cannot load: {e}") })
        };
        if !dir.join("model.bin").is_file() && HfWhisperFolder::is_one(dir) {
            let folder = HfWhisperFolder::open(dir)?;
            let model = Whisper::from_hf_checkpoint(&folder.checkpoint, folder.dims, device, dtype)?;
            let tokenizer = load_tokenizer(&folder.tokenizer_json)?;
            let tokens = WhisperTokens::from_tokenizer(&tokenizer, folder.dims.vocab_size, &folder.tokenizer_json)?;
            let mel = LogMel::new(folder.dims.n_mels)?;
            let config = folder.decoding()?;
            return Ok(Transcriber { model, config, tokens, tokenizer, tokenizer_json: folder.tokenizer_json, mel });
        }
        let folder = WhisperFolder::open(dir)?;
        let model = Whisper::from_folder(&folder, device, dtype)?;
        let tokens = folder_tokens(&folder)?;
        let tokenizer = load_tokenizer(&folder.tokenizer_json)?;
        let mel = LogMel::new(folder.dims.n_mels)?;
        let tokenizer_json = folder.tokenizer_json.clone();
        Ok(Transcriber { model, config: folder.config, tokens, tokenizer, tokenizer_json, mel })
    }

    /// The decoding settings (suppressed tokens, language token ids).
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// Whether the model knows languages other than English.
    pub fn multilingual(&self) -> bool {
        self.model.dims.vocab_size >= MULTILINGUAL_VOCAB
    }

    /// The network.
    pub fn model(&self) -> &Whisper {
        &self.model
    }

    /// Checks `language` against the model: an English-only model takes only `en` (or none),
    /// a multilingual one a code it has a token for.
    pub fn check_language(&self, language: Option<&str>) -> Result<()> {
        match language {
            None => Ok(()),
            Some(code) if !self.multilingual() => match code {
                "en" => Ok(()),
                _ => Err(GraftError::Input(format!(
                    "this model is English-only: it cannot transcribe `{code}` (give --language en or none, \
                     or a multilingual model such as whisper-base)"
                ))),
            },
            Some(code) => self.tokens.transcribe_prompt(Some(code)).map(|_| ()),
        }
    }

    /// Transcribes 16 kHz mono `samples` (see the module documentation).
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        self.check_language(opts.language.as_deref())?;
        if opts.beam_size == 0 {
            return Err(GraftError::Input("the beam size must be at least 1".into()));
        }
        let windows: Vec<&[f32]> = if samples.is_empty() { vec![samples] } else { samples.chunks(N_SAMPLES).collect() };
        let mut language = opts.language.clone();
        let mut probability = None;
        let mut tokens = Vec::new();
        let mut texts = Vec::new();
        for window in &windows {
            let audio = self.encode_window(window, Pass::Infer)?;
            if language.is_none() {
                if self.multilingual() {
                    let sot = self.tokens.sot;
                    let (id, p) = detect_language(&self.model, &audio, sot, &self.config.lang_ids)?[0];
                    language =
                        self.tokens.token(id).map(|t| t.trim_start_matches("<|").trim_end_matches("|>").to_string());
                    probability = Some(p);
                } else {
                    language = Some("en".into());
                }
            }
            let ids = self.decode_encoded(&audio, language.as_deref(), opts)?;
            texts.push(self.decode_text(&ids)?);
            tokens.extend(ids);
        }
        Ok(Transcript {
            language: language.unwrap_or_else(|| "en".into()),
            language_probability: probability,
            text: texts.concat().trim().to_string(),
            tokens,
            windows: windows.len(),
        })
    }

    /// Decodes one window's encoder states `audio` (`[1, frames, d]`) in `language` (ignored by
    /// an English-only model) with the beam size and token limit of `opts`: the generated ids,
    /// without prompt and end of text.
    pub fn decode_encoded(
        &self,
        audio: &candle_core::Tensor,
        language: Option<&str>,
        opts: &TranscribeOptions,
    ) -> Result<Vec<u32>> {
        let code = if self.multilingual() { language } else { None };
        let prompt = self.tokens.transcribe_prompt(code)?;
        let greedy_opts = GreedyOptions::for_folder(&self.config, &self.tokens, opts.max_new_tokens);
        match opts.beam_size {
            1 => greedy(&self.model, audio, &prompt, &greedy_opts),
            b => beam_search(&self.model, audio, &prompt, &greedy_opts, &BeamOptions::new(b)),
        }
    }

    /// The encoder states `[1, frames, d]` of one window of 16 kHz samples (at most 30 s).
    pub fn encode_window(&self, samples: &[f32], pass: Pass) -> Result<candle_core::Tensor> {
        let mel = self.window_mel(samples)?;
        self.model.encode(&mel, pass)
    }

    /// The log-mel input `[1, n_mels, 3000]` of one window of 16 kHz samples (at most 30 s).
    pub fn window_mel(&self, samples: &[f32]) -> Result<candle_core::Tensor> {
        if samples.len() > N_SAMPLES {
            return Err(GraftError::Input(format!(
                "{:.1} s of audio is longer than one 30-second window",
                samples.len() as f64 / f64::from(super::audio::SAMPLE_RATE)
            )));
        }
        Ok(self.mel.tensor(samples, self.model.device(), DType::F32)?.unsqueeze(0)?)
    }

    /// Applies what `graft speech train` wrote: a PEFT LoRA folder (`adapter/`, attached) or a
    /// file of trained projection weights and biases under Hugging Face names
    /// (`trained.safetensors`, replacing the model's). Every tensor must belong to a projection
    /// and have its shape; problems are listed together.
    pub fn apply_trained(&mut self, path: &Path) -> Result<()> {
        if path.is_dir() {
            crate::io::peft::load_lora_into(path, &mut self.model)?;
            return Ok(());
        }
        let device = self.model.device().clone();
        let dtype = self.model.dtype();
        let mut tensors = candle_core::safetensors::load(path, &device)
            .map_err(|e| GraftError::model(path, format!("not a safetensors file of trained weights: {e}")))?;
        let mut problems = Vec::new();
        let mut applied = 0;
        for p in self.model.projections_mut() {
            let (out, inp) = p.dims();
            for (suffix, shape) in [("weight", vec![out, inp]), ("bias", vec![out])] {
                let key = format!("model.{}.{suffix}", p.name());
                let Some(t) = tensors.remove(&key) else { continue };
                if t.dims() != shape.as_slice() {
                    problems.push(format!("{key}: shape {:?}, expected {shape:?}", t.dims()));
                    continue;
                }
                let t = t.to_dtype(dtype)?;
                if suffix == "weight" {
                    p.set_base(crate::models::linear::BaseWeight::Dense(t))?;
                } else {
                    p.set_bias(Some(t));
                }
                applied += 1;
            }
        }
        let mut left: Vec<String> = tensors.into_keys().collect();
        left.sort();
        problems.extend(left.into_iter().map(|k| format!("{k}: not a projection weight or bias of this model")));
        if applied == 0 && problems.is_empty() {
            problems.push("no tensor".into());
        }
        if !problems.is_empty() {
            return Err(GraftError::model(
                path,
                format!("trained weights do not fit the model:\n  {}", problems.join("\n  ")),
            ));
        }
        Ok(())
    }

    /// The network, for attaching adapters or making weights trainable.
    pub fn model_mut(&mut self) -> &mut Whisper {
        &mut self.model
    }

    /// The special tokens.
    pub fn tokens(&self) -> &WhisperTokens {
        &self.tokens
    }

    /// The text tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The `tokenizer.json` file it was loaded from.
    pub fn tokenizer_json(&self) -> &Path {
        &self.tokenizer_json
    }

    /// The text of token ids, special tokens left out.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| GraftError::Input(format!("cannot decode tokens {ids:?}: {e}")))
    }
}
