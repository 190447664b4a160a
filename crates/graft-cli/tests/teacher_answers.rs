//! `graft data teacher-answers`: the teacher's answers replace the data's in the same format (and
//! `graft train` trains on the file), an interrupted file resumes to the bytes of an uninterrupted
//! one, a file made from other inputs is refused with what changed, and a malformed input line is
//! named by its number. The teacher is the small random decoder (real tokenizer and chat
//! template); the default model only answers two short prompts, compared with `graft generate`.

mod common;

use common::{graft, write_small_model};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const CHAT: &str = r#"{"id": 1, "messages": [{"role": "user", "content": "Sentiment of: I love this phone"}, {"role": "assistant", "content": "positive"}]}
{"id": 2, "messages": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sentiment of: the bus was late again"}, {"role": "assistant", "content": "negative"}]}
{"id": 3, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Sentiment of: it rained"}, {"role": "assistant", "content": "neutral"}]}
{"id": 4, "messages": [{"role": "user", "content": "Sentiment of: best concert ever"}, {"role": "assistant", "content": "positive"}]}
"#;

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn answers(model: &Path, data: &Path, format: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "data",
        "teacher-answers",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    graft(&args).output().unwrap()
}

fn summary(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const SAMPLING: [&str; 6] = ["--max-new-tokens", "6", "--temperature", "0.9", "--seed", "5"];

#[test]
fn answers_replace_the_data_resume_exactly_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_small_model(&model);
    let data = write(&dir.path().join("chat.jsonl"), CHAT);
    let full = dir.path().join("full.jsonl");
    let s = summary(&answers(&model, &data, "messages", &full, &SAMPLING));
    assert_eq!((s["records"].as_u64(), s["resumed"].as_u64(), s["generated"].as_u64()), (Some(4), Some(0), Some(4)));
    let input: Vec<Value> = CHAT.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let output = lines(&full);
    assert_eq!(output.len(), 4);
    let mut tokens = 0;
    for (a, b) in input.iter().zip(&output) {
        assert_eq!(a["id"], b["id"]);
        let (ma, mb) = (a["messages"].as_array().unwrap(), b["messages"].as_array().unwrap());
        assert_eq!(ma.len(), mb.len());
        // Everything but the last assistant message is kept; that one is the teacher's.
        assert_eq!(ma[..ma.len() - 1], mb[..mb.len() - 1]);
        assert_eq!(mb.last().unwrap()["role"], "assistant");
        assert_ne!(ma.last().unwrap()["content"], mb.last().unwrap()["content"]);
        let n = b["teacher_tokens"].as_u64().unwrap();
        assert!((1..=6).contains(&n), "{b}");
        assert!(["eos", "max_new_tokens"].contains(&b["teacher_stop"].as_str().unwrap()), "{b}");
        tokens += n;
    }
    assert_eq!(s["tokens_generated"].as_u64(), Some(tokens));

    // An interruption inside the third line: the torn line is dropped and the rest regenerated,
    // byte for byte the same as the uninterrupted run.
    let bytes = std::fs::read(&full).unwrap();
    let second_end = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(1).unwrap().0 + 1;
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &bytes[..second_end + 10]).unwrap();
    std::fs::copy(dir.path().join("full.jsonl.meta.json"), dir.path().join("cut.jsonl.meta.json")).unwrap();
    let s = summary(&answers(&model, &data, "messages", &cut, &SAMPLING));
    assert_eq!((s["resumed"].as_u64(), s["generated"].as_u64()), (Some(2), Some(2)));
    assert_eq!(std::fs::read(&cut).unwrap(), bytes);
    // A finished file is kept as it is.
    let s = summary(&answers(&model, &data, "messages", &full, &SAMPLING));
    assert_eq!((s["resumed"].as_u64(), s["generated"].as_u64()), (Some(4), Some(0)));
    assert_eq!(std::fs::read(&full).unwrap(), bytes);

    // Other settings or other data: refused, naming what changed; the file is untouched.
    let o =
        answers(&model, &data, "messages", &full, &["--max-new-tokens", "6", "--temperature", "0.9", "--seed", "6"]);
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("generation settings changed (seed 5 → 6)"), "{e}");
    let other = write(&dir.path().join("other.jsonl"), &CHAT.replace("best concert", "worst concert"));
    let e = String::from_utf8_lossy(&answers(&model, &other, "messages", &full, &SAMPLING).stderr).into_owned();
    assert!(e.contains("the data file changed") && !e.contains("settings"), "{e}");
    assert_eq!(std::fs::read(&full).unwrap(), bytes);

    // The file trains as it is.
    let cfg = write(
        &dir.path().join("student.toml"),
        &format!(
            "[model]\nname = \"{}\"\n\n[adapter]\nkind = \"lora\"\nr = 2\ntargets = [\"q_proj\"]\n\n[data]\ntrain = \"{}\"\n\
             format = \"messages\"\nseq_len = 96\neval_fraction = 0.25\n\n[train]\nmax_steps = 1\nbatch_size = 2\n\n[output]\ndir = \"{}\"\n",
            model.display(),
            full.display(),
            dir.path().join("student").display()
        ),
    );
    let o = graft(&["train", cfg.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("student/adapter/adapter_model.safetensors").is_file());
}

#[test]
fn alpaca_and_prompt_completion_answers_replace_their_answer_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_small_model(&model);
    let cases = [
        (
            "alpaca",
            r#"{"instruction": "Sentiment?", "input": "I love it", "output": "positive"}"#,
            "output",
            "instruction",
        ),
        (
            "prompt_completion",
            r#"{"prompt": "Sentiment of I love it:", "completion": " positive"}"#,
            "completion",
            "prompt",
        ),
    ];
    for (format, line, answer, kept) in cases {
        let data = write(&dir.path().join(format!("{format}.jsonl")), &format!("{line}\n{line}\n"));
        let out = dir.path().join(format!("{format}.out.jsonl"));
        summary(&answers(&model, &data, format, &out, &["--max-new-tokens", "4"]));
        let input: Value = serde_json::from_str(line).unwrap();
        let output = lines(&out);
        assert_eq!(output.len(), 2);
        assert_eq!(output[0], output[1], "greedy answers to the same prompt are the same");
        assert_eq!(output[0][kept], input[kept]);
        assert_ne!(output[0][answer], input[answer]);
        assert!(output[0]["teacher_tokens"].as_u64().is_some());
    }
    // A prompt beyond the teacher's context (512) is named before anything is generated.
    let short = r#"{"prompt": "Hi", "completion": "there"}"#;
    let long = serde_json::json!({"prompt": "word ".repeat(600), "completion": "x"}).to_string();
    let data = write(&dir.path().join("long.jsonl"), &format!("{short}\n{long}\n"));
    let out = dir.path().join("long.out.jsonl");
    let o = answers(&model, &data, "prompt_completion", &out, &["--max-new-tokens", "4"]);
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("long.jsonl:2: the prompt is") && e.contains("shorten the prompt"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
}

#[test]
fn a_malformed_line_is_named_and_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = CHAT.lines().collect();
    let bad = write(&dir.path().join("bad.jsonl"), &format!("{}\n{}\n{{\"messages\": [\n", lines[0], lines[1]));
    let out = dir.path().join("out.jsonl");
    let model = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap();
    let model = match model {
        graft::assets::ModelSource::Gguf(p) | graft::assets::ModelSource::HfFolder(p) => p,
    };
    let o = answers(&model, &bad, "messages", &out, &[]);
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.jsonl:3:") && e.contains("not valid JSON"), "{e}");
    assert!(!out.exists(), "nothing is written before the data is read");
    let text = write(&dir.path().join("text.jsonl"), "{\"text\": \"hello\"}\n");
    let o = answers(&model, &text, "text", &out, &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("format `text` has no prompt and answer"));
}

#[test]
fn default_model_answers_as_graft_generate_does() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = ["Is this tweet positive or negative? \"I love sunny days\"", "Name a fruit."];
    let data: String = prompts
        .iter()
        .map(|p| {
            serde_json::json!({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "x"}]})
                .to_string()
                + "\n"
        })
        .collect();
    let data = write(&dir.path().join("chat.jsonl"), &data);
    let out = dir.path().join("out.jsonl");
    let o = graft(&[
        "data",
        "teacher-answers",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-new-tokens",
        "12",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (prompt, line) in prompts.iter().zip(lines(&out)) {
        let o =
            graft(&["generate", "--chat", "--prompt", prompt, "--max-new-tokens", "12", "--json"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let g: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(line["messages"][1]["content"], g["text"], "{prompt}");
        assert_eq!(line["teacher_tokens"], g["new_tokens"]);
        assert!(!g["text"].as_str().unwrap().is_empty());
    }
}
