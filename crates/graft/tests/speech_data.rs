//! The multilingual speech set (`graft data build speech`) built from the real AppStream
//! metadata with the real espeak-ng, kept small (2 languages × (3 training + 1 + 1 test) clips):
//! the manifests parse, every clip reads back with graft's WAV reader at 16 kHz, held-out
//! sentences and voices never reach training, and a seed gives the same build.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use graft::recipes::speech_data::{build_speech, SpeechOptions, SPLITS};
use graft::speech::audio;
use serde_json::Value;

/// The AppStream files and espeak-ng, or `None` (a skip outside CI).
fn prerequisites() -> Option<Vec<PathBuf>> {
    let files = graft::datasets::appstream::default_files();
    let why = "no AppStream metadata in /var/lib/apt/lists (Debian: apt-get install appstream, then apt-get update)";
    if !common::require(files.is_ok(), why) {
        return None;
    }
    let espeak = std::process::Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success());
    if !common::require(espeak, "`espeak-ng` is not on PATH (Debian package espeak-ng)") {
        return None;
    }
    files.ok()
}

fn options(sources: Vec<PathBuf>, seed: u64) -> SpeechOptions {
    SpeechOptions { languages: vec!["de".into(), "pt".into()], per_language: 3, test: 1, seed, sources }
}

fn manifest(dir: &Path, split: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{split}.jsonl"))).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The variant of a voice (`de+m3` -> `m3`).
fn variant(line: &Value) -> String {
    line["voice"].as_str().unwrap().split('+').nth(1).unwrap().to_string()
}

#[test]
fn builds_readable_clips_with_held_out_sentences_and_voices() {
    let Some(sources) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("speech");
    let summary = build_speech(&options(sources.clone(), 7), &out, &mut |_| {}).unwrap();
    assert_eq!(summary.clips, 2 * (3 + 1 + 1));
    let lines: Vec<Vec<Value>> = SPLITS.iter().map(|s| manifest(&out, s)).collect();
    let [train, test_sentences, test_voices] = &lines[..] else { unreachable!() };
    assert_eq!((train.len(), test_sentences.len(), test_voices.len()), (6, 2, 2));
    for line in lines.iter().flatten() {
        for key in ["audio", "text", "language", "voice", "speed", "pitch", "duration_s"] {
            assert!(!line[key].is_null(), "{key} missing in {line}");
        }
        let lang = line["language"].as_str().unwrap();
        assert!(["de", "pt"].contains(&lang), "{line}");
        assert!(line["voice"].as_str().unwrap().starts_with(lang), "a voice of the language: {line}");
        let audio = line["audio"].as_str().unwrap();
        assert!(audio.starts_with(&format!("audio/{lang}/")) && audio.ends_with(".wav"), "{line}");
        let wav = audio::read_wav(&out.join(audio)).unwrap();
        assert_eq!((wav.sample_rate, wav.channels, wav.bits_per_sample), (16_000, 1, 16), "{audio}");
        assert!(wav.duration_s() > 0.3, "{audio}: {} s", wav.duration_s());
        assert!((wav.duration_s() - line["duration_s"].as_f64().unwrap()).abs() < 1e-9, "{line}");
        let peak = wav.samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.05, "{audio} is near silence (peak {peak})");
    }
    let texts = |lines: &[Value]| -> BTreeSet<String> { lines.iter().map(|l| l["text"].to_string()).collect() };
    assert!(texts(train).is_disjoint(&texts(test_sentences)), "a held-out sentence is in training");
    assert_eq!(texts(test_sentences), texts(test_voices), "both test sets speak the held-out sentences");
    for lang in ["de", "pt"] {
        let variants = |lines: &[Value]| -> BTreeSet<String> {
            lines.iter().filter(|l| l["language"] == lang).map(variant).collect()
        };
        let held_out = variants(test_voices);
        assert_eq!(held_out.len(), 1, "{lang}: one held-out variant");
        assert!(held_out.is_disjoint(&variants(train)), "{lang}: the held-out voice is in training");
        assert!(held_out.is_disjoint(&variants(test_sentences)), "{lang}: test_sentences uses training voices");
        assert_eq!(summary.languages[lang].held_out_variant, *held_out.first().unwrap());
    }
    let written: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["clips"], 10);
    assert_eq!(written["languages"]["de"]["clips"]["train"], 3);

    // The same seed gives the same manifests, into an earlier build's folder (replaced).
    build_speech(&options(sources.clone(), 7), &out, &mut |_| {}).unwrap();
    assert_eq!(SPLITS.map(|s| manifest(&out, s)).to_vec(), lines);
    let other = tmp.path().join("other");
    build_speech(&options(sources, 8), &other, &mut |_| {}).unwrap();
    assert_ne!(manifest(&other, "train"), *train, "another seed draws other sentences and voices");
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "work folders left behind: {left:?}");
}

#[test]
fn bad_languages_and_folders_are_refused_before_anything_is_written() {
    let Some(sources) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("speech");
    let mut opts = options(sources, 1);
    opts.languages = vec!["de".into(), "xx".into()];
    let e = build_speech(&opts, &out, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("unknown language `xx`") && e.contains("de, en, es, fr, it, pt"), "{e}");
    assert!(!out.exists());

    // A language whose sentences do not cover --test.
    opts.languages = vec!["it".into()];
    opts.test = 100_000;
    let e = build_speech(&opts, &out, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("Italian (it)") && e.contains("--test 100000"), "{e}");
    assert!(!out.exists());
    // A language with no sentences at all (a file with English text only).
    let english_only = tmp.path().join("c.yml");
    std::fs::write(&english_only, "---\nID: a\nSummary:\n  C: Shows the map of the whole world\n").unwrap();
    opts.sources = vec![english_only.clone()];
    opts.test = 1;
    let e = build_speech(&opts, &out, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("Italian (it): 0 usable sentences"), "{e}");
    std::fs::remove_file(english_only).unwrap();
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing half-written is left");

    // A folder holding other files is not replaced.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = build_speech(&opts, &out, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("holds other files"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}
