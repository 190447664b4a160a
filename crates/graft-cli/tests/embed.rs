//! `graft embed` end to end: the JSONL and safetensors outputs agree, rows are unit-norm and in
//! input order (checked against tests/golden/minilm_embeddings.json), and malformed input lines
//! are reported by file and line.

use std::path::Path;
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/minilm_embeddings.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

#[test]
fn jsonl_and_safetensors_agree_and_rows_are_unit_norm() {
    let g = golden();
    let sentences: Vec<&str> = g["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // The golden sentences (extra keys are ignored), then an empty text.
    let mut lines: Vec<String> =
        sentences.iter().enumerate().map(|(i, s)| serde_json::json!({"id": i, "text": s}).to_string()).collect();
    lines.push(r#"{"text": ""}"#.into());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("sub/emb");
    let run = graft(&[
        "embed",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--json",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!((summary["n"].as_u64(), summary["dim"].as_u64()), (Some(9), Some(384)));
    assert!(summary["seconds"].as_f64().unwrap() > 0.0 && summary["texts_per_s"].as_f64().unwrap() > 0.0);

    let jsonl = std::fs::read_to_string(dir.path().join("sub/emb.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 9);
    let tensors =
        candle_core::safetensors::load(dir.path().join("sub/emb.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors.keys().collect::<Vec<_>>(), vec!["embeddings"]);
    let matrix: Vec<Vec<f32>> = tensors["embeddings"].to_vec2().unwrap();
    assert_eq!(matrix.len(), 9);
    for (i, (row, st)) in rows.iter().zip(&matrix).enumerate() {
        let text = row["text"].as_str().unwrap();
        assert_eq!(text, sentences.get(i).copied().unwrap_or(""), "row {i} out of order");
        let e: Vec<f32> = row["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&e, st, "row {i}: JSONL and safetensors differ");
        let norm = e.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i}: norm {norm}");
        if let Some(reference) = g["embeddings"].get(i) {
            let r: Vec<f64> = reference.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let c = cosine(&e.iter().map(|v| *v as f64).collect::<Vec<_>>(), &r);
            assert!(c >= 0.99999, "row {i}: cosine with the reference {c}");
        }
    }
}

#[test]
fn malformed_lines_are_reported_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let out = dir.path().join("out");
    for (content, line, what) in [
        ("{\"text\": \"ok\"}\n{\"sentence\": \"no text\"}\n", 2, "missing field `text`"),
        ("{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"unclosed}\n", 3, "not valid JSON"),
        ("{\"text\": [\"a\"]}\n", 1, "field `text` must be a string, found an array"),
    ] {
        std::fs::write(&input, content).unwrap();
        let run = graft(&["embed", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(&format!("bad.jsonl:{line}")) && err.contains(what), "{err}");
        assert!(!dir.path().join("out.jsonl").exists() && !dir.path().join("out.safetensors").exists());
    }
    // An output that would replace the input is refused before anything is written.
    std::fs::write(&input, "{\"text\": \"ok\"}\n").unwrap();
    let run = graft(&["embed", "--input", input.to_str().unwrap(), "--out", dir.path().join("bad").to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("would overwrite the input"));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "{\"text\": \"ok\"}\n");
}

#[test]
fn help_has_an_example() {
    let run = graft(&["embed", "--help"]);
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && help.contains("Example: graft embed --input"), "{help}");
}
