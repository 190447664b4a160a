//! Speech synthesis with espeak-ng (the Debian package `espeak-ng`), run as a program: a
//! sentence, an espeak-ng voice with a variant (`de+m3`, `pt-br+f2`), a speed and a pitch in,
//! a 16 kHz mono 16-bit WAV file out (espeak-ng writes 22,050 Hz; graft's resampler,
//! [`super::audio::resample`], brings it to 16 kHz).

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Command, Stdio};

use rand::Rng;

use super::audio;
use crate::{GraftError, Result};

/// The program run.
pub const PROGRAM: &str = "espeak-ng";

/// espeak-ng's voice variants used (`+m1` ... `+f5`: different formant settings, male and
/// female), combined with each language's voices.
pub const VARIANTS: &[&str] = &["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"];

/// Speeds drawn from, in words per minute (`-s`; espeak-ng's default is 175).
pub const SPEEDS: RangeInclusive<u32> = 140..=190;

/// Pitches drawn from (`-p`, 0 to 99; espeak-ng's default is 50).
pub const PITCHES: RangeInclusive<u32> = 25..=75;

/// How one clip is spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    /// The espeak-ng voice with its variant (`de+m3`).
    pub name: String,
    /// The variant alone (`m3`).
    pub variant: &'static str,
    /// Words per minute.
    pub speed: u32,
    /// Pitch, 0 to 99.
    pub pitch: u32,
}

impl Voice {
    /// A voice drawn with `rng`: one of `voices`, one of `variants`, a speed from [`SPEEDS`]
    /// and a pitch from [`PITCHES`]. Both lists must be non-empty.
    pub fn draw(rng: &mut impl Rng, voices: &[&str], variants: &[&'static str]) -> Voice {
        let voice = voices[rng.random_range(0..voices.len())];
        let variant = variants[rng.random_range(0..variants.len())];
        Voice {
            name: format!("{voice}+{variant}"),
            variant,
            speed: rng.random_range(SPEEDS),
            pitch: rng.random_range(PITCHES),
        }
    }
}

/// The error for a program that cannot be started.
fn not_started(e: std::io::Error) -> GraftError {
    if e.kind() == std::io::ErrorKind::NotFound {
        GraftError::Input(format!(
            "`{PROGRAM}` was not found on PATH: the speech data is spoken by it; install it \
             (Debian/Ubuntu: `apt-get install espeak-ng`; other systems: https://github.com/espeak-ng/espeak-ng)"
        ))
    } else {
        GraftError::Input(format!("cannot start `{PROGRAM}`: {e}"))
    }
}

/// espeak-ng's version (`1.51`), which also checks that it can be run.
pub fn version() -> Result<String> {
    let out = Command::new(PROGRAM).arg("--version").output().map_err(not_started)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(GraftError::Input(format!("`{PROGRAM} --version` exited with {}", out.status)));
    }
    // "eSpeak NG text-to-speech: 1.51  Data at: ..."
    let version = text.split("text-to-speech:").nth(1).and_then(|r| r.split_whitespace().next());
    Ok(version.unwrap_or("unknown").to_string())
}

/// Speaks `text` with `voice` into `path` as a 16 kHz mono 16-bit WAV file and returns its
/// length in seconds. espeak-ng's own output goes to `scratch` (removed afterwards). The text
/// goes through standard input, so no sentence is taken for an option.
pub fn speak(text: &str, voice: &Voice, path: &Path, scratch: &Path) -> Result<f64> {
    let mut child = Command::new(PROGRAM)
        .args(["-b", "1", "-v", &voice.name, "-s", &voice.speed.to_string(), "-p", &voice.pitch.to_string()])
        .arg("-w")
        .arg(scratch)
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(not_started)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(|e| GraftError::Input(format!("writing to `{PROGRAM}`: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| GraftError::Input(format!("waiting for `{PROGRAM}`: {e}")))?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(GraftError::Input(format!(
            "`{PROGRAM} -v {}` failed ({}){}",
            voice.name,
            out.status,
            if said.is_empty() { String::new() } else { format!(": {said}") }
        )));
    }
    let wav = audio::read_wav(scratch)?;
    let samples = audio::resample(&wav.samples, wav.sample_rate, audio::SAMPLE_RATE)?;
    std::fs::remove_file(scratch).map_err(|e| GraftError::io(scratch, e))?;
    audio::write_wav16(path, &samples, audio::SAMPLE_RATE)?;
    Ok(samples.len() as f64 / f64::from(audio::SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let v = Voice::draw(&mut rng, &["pt", "pt-br"], &["m2", "f4"]);
            assert!(SPEEDS.contains(&v.speed) && PITCHES.contains(&v.pitch), "{v:?}");
            assert!(["pt+m2", "pt+f4", "pt-br+m2", "pt-br+f4"].contains(&v.name.as_str()), "{v:?}");
            assert!(v.name.ends_with(v.variant));
        }
    }
}
