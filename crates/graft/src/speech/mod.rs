//! Speech in: audio files read and resampled to the 16 kHz mono samples speech models take
//! ([`audio`]: WAV through `hound`, resampling through `rubato`).

pub mod audio;

#[cfg(test)]
mod wav_hostile_tests;
