//! `graft speech score`: a manifest and its hypotheses scored to the table and to JSON, and a
//! hypotheses file that does not match its manifest refused with the input-error exit code.

mod common;

use common::graft;
use std::path::Path;

fn write(dir: &Path, name: &str, lines: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn scores_a_manifest_and_refuses_a_missing_hypothesis() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "test_voices.jsonl",
        &[
            r#"{"audio": "audio/de/test_voices-00000.wav", "text": "Ein Werkzeug für Dateien.", "language": "de", "voice": "de+f5"}"#,
            r#"{"audio": "audio/fr/test_voices-00000.wav", "text": "Un outil pour l'image.", "language": "fr", "voice": "fr-fr+f3"}"#,
        ],
    );
    let hyps = write(
        dir.path(),
        "hyp.jsonl",
        &[
            r#"{"audio": "audio/fr/test_voices-00000.wav", "text": "un outil pour limage"}"#,
            r#"{"audio": "audio/de/test_voices-00000.wav", "text": "ein werkzeug für dateien"}"#,
        ],
    );
    let out = graft(&["speech", "score", "--manifest", &manifest, "--hypotheses", &hyps, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // French: "l image" (the apostrophe splits) against "limage": 1 substitution + 1 deletion of 5.
    assert_eq!(v["languages"]["fr"]["ref_words"], 5);
    assert_eq!(v["languages"]["fr"]["wer"], 0.4);
    assert_eq!(v["languages"]["de"]["wer"], 0.0);
    assert_eq!(v["overall"]["wer"], 2.0 / 9.0);
    assert_eq!(v["bootstrap"]["resamples"], 1000);

    let out = graft(&["speech", "score", "--manifest", &manifest, "--hypotheses", &hyps]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("language") && text.contains("\nfr ") && text.contains("\nall "), "{text}");
    assert!(text.contains("40.00"), "{text}");

    let short = write(dir.path(), "short.jsonl", &[r#"{"audio": "audio/de/test_voices-00000.wav", "text": "ein"}"#]);
    let out = graft(&["speech", "score", "--manifest", &manifest, "--hypotheses", &short]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("test_voices.jsonl:2: no hypothesis for audio `audio/fr/test_voices-00000.wav`"), "{err}");
}
