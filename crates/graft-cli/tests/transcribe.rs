//! `graft transcribe` end to end with whisper-tiny-en on the committed English clip: the text
//! and tokens are CTranslate2's (beam search with 5 beams, and greedy with `--beam-size 1`;
//! `tests/golden/speech/whisper.json`), audio past 30 s is decoded as a second window, and bad
//! input (a missing or corrupt audio file, a language an English-only model lacks) exits with
//! code 3 naming the problem.

mod common;

use graft::speech::audio::{read_wav, write_wav16};
use serde_json::Value;
use std::path::PathBuf;

fn clip() -> PathBuf {
    common::golden_dir().join("speech").join("en.wav")
}

/// CTranslate2's decoding `which` (`greedy`, `beam5`) of tiny.en on the English clip.
fn reference(which: &str) -> (Vec<u64>, String) {
    let r = &common::golden_json("speech/whisper.json")["models"]["tiny-en"]["clips"]["en"][which];
    let ids = r["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    (ids, r["text"].as_str().unwrap().trim().to_string())
}

/// Runs `graft transcribe --model whisper-tiny-en ARGS`; returns the exit code, stdout and stderr.
fn transcribe(args: &[&str]) -> (i32, String, String) {
    let all: Vec<&str> =
        ["transcribe", "--model", "whisper-tiny-en"].iter().copied().chain(args.iter().copied()).collect();
    let out = common::graft(&all).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn text_and_tokens_are_ctranslate2s_and_long_audio_is_windowed() {
    let dir = tempfile::tempdir().unwrap();
    // The clip, silence up to 30 s, and the clip again: two windows, each the clip as the model
    // sees it alone (the log-mel pads a short clip with zeros).
    let wav = read_wav(&clip()).unwrap();
    assert_eq!(wav.sample_rate, 16_000);
    let mut long = wav.samples.clone();
    long.resize(30 * 16_000, 0.0);
    long.extend_from_slice(&wav.samples);
    let long_path = dir.path().join("twice.wav");
    write_wav16(&long_path, &long, 16_000).unwrap();

    let clip = clip();
    let (code, out, err) = transcribe(&["--json", clip.to_str().unwrap(), long_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2, "{out}");
    let (ids, text) = reference("beam5");
    let r = &rows[0];
    assert_eq!(r["audio"], clip.display().to_string());
    assert_eq!(r["language"], "en");
    assert_eq!(r["language_probability"], Value::Null);
    assert_eq!(r["text"], text);
    assert_eq!(r["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>(), ids);
    let duration = r["duration_s"].as_f64().unwrap();
    assert!((duration - wav.samples.len() as f64 / 16_000.0).abs() < 1e-9);
    let decode = r["decode_s"].as_f64().unwrap();
    assert!(decode > 0.0 && (r["rtf"].as_f64().unwrap() - decode / duration).abs() < 1e-9);
    let r = &rows[1];
    assert_eq!(r["text"], format!("{text} {text}"));
    assert_eq!(r["tokens"].as_array().unwrap().len(), 2 * ids.len());
    assert!(err.contains("[2/2]"), "progress for many files: {err}");

    // Greedy decoding, human output: path, language, text.
    let (greedy_ids, greedy_text) = reference("greedy");
    assert_ne!(greedy_ids, ids, "the clip tells beam search from greedy decoding");
    let (code, out, err) = transcribe(&["--beam-size", "1", clip.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\ten\t{greedy_text}\n", clip.display()));
}

#[test]
fn bad_input_exits_with_code_3_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wav");
    let (code, _, err) = transcribe(&[clip().to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let corrupt = dir.path().join("notes.wav");
    std::fs::write(&corrupt, "not audio").unwrap();
    let (code, _, err) = transcribe(&[corrupt.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&corrupt.display().to_string()) && err.contains("not a WAV file"), "{err}");

    let (code, _, err) = transcribe(&["--language", "de", clip().to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("English-only") && err.contains("`de`"), "{err}");

    let folder = dir.path().join("no-model");
    let (code, _, err) = common::graft(&["transcribe", "--model", folder.to_str().unwrap(), clip().to_str().unwrap()])
        .output()
        .map(|o| (o.status.code().unwrap_or(-1), (), String::from_utf8_lossy(&o.stderr).into_owned()))
        .unwrap();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&folder.display().to_string()), "{err}");
}

#[test]
fn a_manifest_transcribes_to_a_hypotheses_file_that_scores() {
    let dir = tempfile::tempdir().unwrap();
    // The English and German clips in a manifest; German through the English-only model.
    let mut lines = String::new();
    for (file, text, language) in
        [("en.wav", "Green kites drift over the harbour.", "en"), ("de.wav", "Der Hund schläft am warmen Ofen.", "de")]
    {
        std::fs::copy(common::golden_dir().join("speech").join(file), dir.path().join(file)).unwrap();
        lines.push_str(&format!("{}\n", serde_json::json!({"audio": file, "text": text, "language": language})));
    }
    let manifest = dir.path().join("clips.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    let (code, out, err) =
        transcribe(&["--manifest", manifest.to_str().unwrap(), "--beam-size", "1", "--languages", "en", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "--languages en keeps the English clip: {out}");
    assert_eq!(rows[0]["audio"], "en.wav");
    assert_eq!(rows[0]["text"], reference("greedy").1);

    let (code, out, err) = transcribe(&["--manifest", manifest.to_str().unwrap(), "--beam-size", "1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let hyps = dir.path().join("hyp.jsonl");
    std::fs::write(&hyps, &out).unwrap();
    let scored = common::graft(&[
        "speech",
        "score",
        "--manifest",
        manifest.to_str().unwrap(),
        "--hypotheses",
        hyps.to_str().unwrap(),
        "--json",
    ])
    .output()
    .unwrap();
    assert!(scored.status.success(), "{}", String::from_utf8_lossy(&scored.stderr));
    let report: Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(report["overall"]["utterances"], 2);
    assert!(report["languages"]["de"]["wer"].as_f64().unwrap() > 0.5, "German through tiny.en: {report}");

    // A manifest conflicts with audio arguments.
    let (code, _, err) = transcribe(&["--manifest", manifest.to_str().unwrap(), clip().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be used with"), "{err}");
}
