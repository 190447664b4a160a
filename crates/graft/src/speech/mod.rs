//! Speech in: audio files read and resampled to the 16 kHz mono samples speech models take
//! ([`audio`]: WAV through `hound`, resampling through `rubato`), and Whisper's log-mel front
//! end that turns them into a model's input ([`mel`]: STFT, Slaney mel filter bank computed
//! here, log10 with Whisper's clamping and scaling, 30-second windows), and decoding with a
//! Whisper network ([`decode`]: prompts, language detection, greedy decoding with Whisper's
//! token suppression; [`beam`]: beam search; [`transcribe`]: whole files in 30-second
//! windows). Synthetic speech data: sentences per language from real text ([`sentences`])
//! spoken by espeak-ng ([`synth`]); the build is [`crate::recipes::speech_data`]. Transcripts
//! scored: WER and CER per language with bootstrap intervals ([`score`]). Fine-tuning reads
//! manifests into clips and training sequences ([`train_set`]) and keeps frozen encoders'
//! states on disk ([`encoder_cache`]); [`export`] writes a (fine-tuned) model as a Hugging
//! Face Whisper folder; the recipe is
//! [`crate::recipes::speech_train`].

pub mod audio;
pub mod beam;
pub mod decode;
pub mod encoder_cache;
pub mod export;
pub mod mel;
pub mod score;
pub mod sentences;
pub mod synth;
pub mod train_set;
pub mod transcribe;

#[cfg(test)]
mod wav_hostile_tests;
