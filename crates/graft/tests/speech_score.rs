//! Scoring transcripts: WER and CER after the normaliser, corpus rates, the per-language report
//! and its JSON shape, the bootstrap intervals, and reading a manifest with its hypotheses.

use graft::speech::score::manifest::read_pairs;
use graft::speech::score::{score, score_utterance, BootstrapOptions, EditCounts, Utterance};
use std::path::Path;

fn utt(language: &str, reference: &str, hypothesis: &str) -> Utterance {
    Utterance { language: language.into(), reference: reference.into(), hypothesis: hypothesis.into() }
}

fn counts(reference: usize, substitutions: usize, deletions: usize, insertions: usize) -> EditCounts {
    EditCounts { reference, substitutions, deletions, insertions }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn jiwer_example_words_and_characters() {
    // jiwer's README example: WER 1 / 2. Characters: "hello world" has 11 (the space counts);
    // "world" → "duck" is 4 substitutions and 1 deletion, so CER 5 / 11.
    let s = score_utterance("hello world", "hello duck");
    assert_eq!(s.words, counts(2, 1, 0, 0));
    assert_eq!(s.chars, counts(11, 4, 1, 0));
    assert!(close(s.chars.rate().unwrap(), 5.0 / 11.0));
}

#[test]
fn normalisation_happens_before_alignment() {
    // Case, punctuation and a bracketed tag do not count; the missing accent does.
    let s = score_utterance("¿Qué año es? [música]", "que AÑO es.");
    assert_eq!(s.words, counts(3, 1, 0, 0));
    assert_eq!(s.chars, counts(10, 1, 0, 0));
    // An empty hypothesis deletes everything: WER and CER 1.
    let s = score_utterance("L'été est là.", "");
    assert_eq!(s.words, counts(4, 0, 4, 0));
    assert_eq!(s.chars, counts(12, 0, 12, 0));
    // A reference with no words after normalisation: the hypothesis is all insertions.
    let s = score_utterance("[Musik] (lacht)", "ja ja");
    assert_eq!(s.words, counts(0, 0, 0, 2));
    assert_eq!(s.words.rate(), None);
}

#[test]
fn corpus_rate_is_total_edits_over_total_reference() {
    let utts = [
        utt(
            "de",
            "eins zwei drei vier fünf sechs sieben acht neun zehn",
            "eins zwei drei vier fünf sechs sieben acht neun zehn",
        ),
        utt("de", "guten tag", "guten"),
    ];
    let r = score(&utts, &BootstrapOptions::default()).unwrap();
    let de = &r.languages["de"];
    assert_eq!((de.utterances, de.ref_words, de.deletions), (2, 12, 1));
    // 1 edit over 12 words, not the mean of the per-utterance rates (0 + 1/2) / 2 = 0.25.
    assert!(close(de.wer, 1.0 / 12.0));
    assert!(!close(de.wer, 0.25));
    // Characters: 52 + 9 in the references; " tag" is 4 deletions.
    assert_eq!((de.ref_chars, de.char_deletions), (61, 4));
    assert!(close(de.cer, 4.0 / 61.0));
}

#[test]
fn per_language_and_overall_with_a_stable_json_shape() {
    let utts = [
        utt("de", "Die Straße führt zur Brücke.", "die strasse führt zur brücke"),
        utt("es", "¿Qué año es?", "que ano es"),
        utt("es", "Hola (risas) amigo", "hola amigo"),
    ];
    let opts = BootstrapOptions { resamples: 200, seed: 7 };
    let r = score(&utts, &opts).unwrap();
    let de = &r.languages["de"];
    // straße → strasse: one word substituted of five; ß→s and one s inserted of 27 characters.
    assert_eq!((de.ref_words, de.substitutions, de.deletions, de.insertions), (5, 1, 0, 0));
    assert!(close(de.wer, 0.2));
    assert_eq!((de.ref_chars, de.char_substitutions, de.char_insertions), (27, 1, 1));
    let es = &r.languages["es"];
    assert_eq!((es.utterances, es.ref_words, es.substitutions), (2, 5, 2));
    assert!(close(es.wer, 0.4));
    assert!(close(es.cer, 2.0 / 20.0));
    let all = &r.overall;
    assert_eq!((all.utterances, all.ref_words), (3, 10));
    assert!(close(all.wer, 3.0 / 10.0));
    assert!(close(all.cer, 4.0 / 47.0));

    let v = serde_json::to_value(&r).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let mut top = keys(&v);
    top.sort();
    assert_eq!(top, ["bootstrap", "languages", "normaliser", "overall"]);
    assert_eq!(v["normaliser"], "whisper-basic");
    assert_eq!(v["bootstrap"], serde_json::json!({"resamples": 200, "seed": 7}));
    assert_eq!(keys(&v["languages"]), ["de", "es"]);
    let mut fields = keys(&v["overall"]);
    fields.sort();
    let mut expected = [
        "utterances",
        "ref_words",
        "substitutions",
        "deletions",
        "insertions",
        "wer",
        "wer_ci95",
        "ref_chars",
        "char_substitutions",
        "char_deletions",
        "char_insertions",
        "cer",
        "cer_ci95",
    ];
    expected.sort();
    assert_eq!(fields, expected);
    assert_eq!(v["languages"]["de"]["wer_ci95"].as_array().unwrap().len(), 2);
}

/// `n` utterances of five words, the i-th with `i % 3` words wrong: corpus WER 1 / 5.
fn varied(n: usize) -> Vec<Utterance> {
    let words = ["uno", "dos", "tres", "cuatro", "cinco"];
    (0..n)
        .map(|i| {
            let hyp: Vec<&str> = words.iter().enumerate().map(|(k, w)| if k < i % 3 { "x" } else { w }).collect();
            utt("es", &words.join(" "), &hyp.join(" "))
        })
        .collect()
}

#[test]
fn bootstrap_interval_holds_the_estimate_shrinks_and_repeats() {
    let opts = BootstrapOptions { resamples: 1000, seed: 11 };
    let small = score(&varied(30), &opts).unwrap().overall;
    let large = score(&varied(300), &opts).unwrap().overall;
    for g in [&small, &large] {
        assert!(close(g.wer, 0.2));
        let [lo, hi] = g.wer_ci95;
        assert!(lo < g.wer && g.wer < hi, "{lo} < {} < {hi}", g.wer);
        let [lo, hi] = g.cer_ci95;
        assert!(lo < g.cer && g.cer < hi, "{lo} < {} < {hi}", g.cer);
    }
    let width = |c: [f64; 2]| c[1] - c[0];
    // Ten times the utterances: about √10 ≈ 3.2 times narrower.
    assert!(width(large.wer_ci95) < 0.5 * width(small.wer_ci95), "{:?} vs {:?}", large.wer_ci95, small.wer_ci95);
    assert!(width(large.cer_ci95) < 0.5 * width(small.cer_ci95));
    // The same seed gives the same report; another seed the same point estimate, in its interval.
    assert_eq!(score(&varied(30), &opts).unwrap().overall, small);
    let other = score(&varied(30), &BootstrapOptions { resamples: 1000, seed: 12 }).unwrap().overall;
    assert!(close(other.wer, small.wer));
    assert!(other.wer_ci95[0] < other.wer && other.wer < other.wer_ci95[1]);
}

#[test]
fn undefined_rates_and_empty_sets_are_refused() {
    let e = score(&[utt("fr", "(rires) [musique]", "oui")], &BootstrapOptions::default()).unwrap_err().to_string();
    assert!(e.contains("language `fr`") && e.contains("no words"), "{e}");
    assert!(score(&[], &BootstrapOptions::default()).is_err());
    // An empty reference beside others adds its insertions to its language.
    let r =
        score(&[utt("fr", "(rires)", "oui"), utt("fr", "bonjour", "bonjour")], &BootstrapOptions::default()).unwrap();
    assert_eq!((r.languages["fr"].ref_words, r.languages["fr"].insertions), (1, 1));
    assert!(close(r.overall.wer, 1.0));
}

fn write(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn manifest_and_hypotheses_pair_by_audio() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "test.jsonl",
        &[
            r#"{"audio": "audio/de/a.wav", "text": "Guten Tag.", "language": "de", "voice": "de+m1", "speed": 150}"#,
            r#"{"audio": "audio/pt/b.wav", "text": "Olá, mundo!", "language": "pt", "voice": "pt+f2", "speed": 170}"#,
        ],
    );
    let hyps = write(
        dir.path(),
        "hyp.jsonl",
        &[r#"{"audio": "audio/pt/b.wav", "text": "ola mundo"}"#, r#"{"audio": "audio/de/a.wav", "text": "guten tag"}"#],
    );
    let pairs = read_pairs(&manifest, &hyps).unwrap();
    assert_eq!(pairs, [utt("de", "Guten Tag.", "guten tag"), utt("pt", "Olá, mundo!", "ola mundo")]);

    let missing = write(dir.path(), "missing.jsonl", &[r#"{"audio": "audio/de/a.wav", "text": "guten tag"}"#]);
    let e = read_pairs(&manifest, &missing).unwrap_err().to_string();
    assert!(e.contains("test.jsonl:2") && e.contains("no hypothesis for audio `audio/pt/b.wav`"), "{e}");

    let unknown = write(
        dir.path(),
        "unknown.jsonl",
        &[
            r#"{"audio": "audio/de/a.wav", "text": "a"}"#,
            r#"{"audio": "audio/pt/b.wav", "text": "b"}"#,
            r#"{"audio": "audio/it/c.wav", "text": "c"}"#,
        ],
    );
    let e = read_pairs(&manifest, &unknown).unwrap_err().to_string();
    assert!(e.contains("unknown.jsonl:3") && e.contains("`audio/it/c.wav` is not in the manifest"), "{e}");

    let twice = write(
        dir.path(),
        "twice.jsonl",
        &[r#"{"audio": "audio/de/a.wav", "text": "a"}"#, r#"{"audio": "audio/de/a.wav", "text": "b"}"#],
    );
    let e = read_pairs(&manifest, &twice).unwrap_err().to_string();
    assert!(e.contains("twice.jsonl:2") && e.contains("already has a hypothesis on line 1"), "{e}");

    let no_text = write(dir.path(), "no_text.jsonl", &[r#"{"audio": "audio/de/a.wav"}"#]);
    let e = read_pairs(&manifest, &no_text).unwrap_err().to_string();
    assert!(e.contains("no_text.jsonl:1") && e.contains("missing field `text`"), "{e}");
}
