//! Files of the summarization and question-answering tasks: how a pair or a question becomes a
//! chat prompt, and reading / writing them as JSONL.
//!
//! - Summarization: `{"messages": [user: instruction + document, assistant: summary]}` lines
//!   (the `messages` training format, so the same file trains and evaluates), or
//!   `{"document": ..., "summary": ...}` lines. A pair with an empty field is a counted skip.
//! - Question answering: SQuAD-style lines `{"id", "context", "question", "answers": {"text":
//!   [...], "answer_start": [...]}}` (the list form `"answers": [{"text", "answer_start"}]` is
//!   read too). `answer_start` counts characters (Unicode scalar values), as SQuAD's Python
//!   tooling does. A line whose answer is not in its context at `answer_start` (or anywhere,
//!   when `answer_start` is absent), or that has no answer, is a counted skip.
//!
//! A line that is not JSON or lacks a required field is an error naming `file:line`.

use crate::tokenizer::Message;
use crate::{GraftError, Result};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::Path;

/// The instruction before the document in a summarization prompt.
pub const SUMMARIZE_INSTRUCTION: &str = "Summarize this software description in one short sentence.";

/// The instruction after the question in a question-answering prompt.
pub const QA_INSTRUCTION: &str = "Answer with the exact words from the text.";

/// A document and its reference summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryPair {
    /// Identifier (the file position `file:line` when the line has none).
    pub id: String,
    /// The text to summarize.
    pub document: String,
    /// The reference summary.
    pub summary: String,
}

/// One gold answer: its text and where it starts in the context (in characters).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer text.
    pub text: String,
    /// Character offset of `text` in the context.
    pub start: usize,
}

/// A SQuAD-style question.
#[derive(Debug, Clone, PartialEq)]
pub struct QaItem {
    /// Identifier.
    pub id: String,
    /// The passage the answer comes from.
    pub context: String,
    /// The question.
    pub question: String,
    /// Gold answers (at least one), each found in `context`.
    pub answers: Vec<Answer>,
}

/// Lines read and lines skipped (with the first reasons).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkipReport {
    /// Non-empty lines read.
    pub n_lines: usize,
    /// Lines skipped.
    pub n_skipped: usize,
    /// `file:line: why` for the first 20 skipped lines.
    pub skipped: Vec<String>,
}

impl SkipReport {
    fn skip(&mut self, why: String) {
        self.n_skipped += 1;
        if self.skipped.len() < 20 {
            self.skipped.push(why);
        }
    }
}

/// The chat prompt asking for a summary of `document`.
pub fn summarize_messages(document: &str) -> Vec<Message> {
    vec![Message { role: "user".into(), content: format!("{SUMMARIZE_INSTRUCTION}\n\n{document}") }]
}

/// The chat prompt asking `question` about `context`.
pub fn qa_messages(context: &str, question: &str) -> Vec<Message> {
    vec![Message { role: "user".into(), content: format!("{context}\n\nQuestion: {question}\n{QA_INSTRUCTION}") }]
}

/// Byte offset of character `char_idx` in `s` (`s.len()` for the end); `None` past the end.
fn byte_offset(s: &str, char_idx: usize) -> Option<usize> {
    s.char_indices().map(|(b, _)| b).chain(std::iter::once(s.len())).nth(char_idx)
}

/// Character offset of the first occurrence of `needle` in `s`.
pub fn char_find(s: &str, needle: &str) -> Option<usize> {
    s.find(needle).map(|b| s[..b].chars().count())
}

impl QaItem {
    /// Checks that every answer is non-empty and occurs in the context at its start; the error
    /// says which answer is not.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.answers.is_empty() {
            return Err("no answer".into());
        }
        for a in &self.answers {
            if a.text.trim().is_empty() {
                return Err("empty answer".into());
            }
            let at = byte_offset(&self.context, a.start);
            if !at.is_some_and(|b| self.context[b..].starts_with(&a.text)) {
                return Err(format!("answer `{}` is not in the context at character {}", a.text, a.start));
            }
        }
        Ok(())
    }

    /// The SQuAD JSON line.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "context": self.context,
            "question": self.question,
            "answers": {
                "text": self.answers.iter().map(|a| a.text.as_str()).collect::<Vec<_>>(),
                "answer_start": self.answers.iter().map(|a| a.start).collect::<Vec<_>>(),
            },
        })
    }

    /// The training conversation: the QA prompt and the first answer.
    pub fn to_messages_json(&self) -> Value {
        let mut m = qa_messages(&self.context, &self.question);
        m.push(Message { role: "assistant".into(), content: self.answers[0].text.clone() });
        json!({ "messages": m })
    }
}

impl SummaryPair {
    /// The training conversation (`messages` format): the summarization prompt and the summary.
    pub fn to_messages_json(&self) -> Value {
        let mut m = summarize_messages(&self.document);
        m.push(Message { role: "assistant".into(), content: self.summary.clone() });
        json!({ "id": self.id, "messages": m })
    }
}

/// Writes one JSON value per line.
pub fn write_jsonl(path: &Path, lines: impl IntoIterator<Item = Value>) -> Result<usize> {
    let file = std::fs::File::create(path).map_err(|e| GraftError::io(path, e))?;
    let mut f = std::io::BufWriter::new(file);
    let mut n = 0;
    for line in lines {
        writeln!(f, "{line}").map_err(|e| GraftError::io(path, e))?;
        n += 1;
    }
    f.flush().map_err(|e| GraftError::io(path, e))?;
    Ok(n)
}

/// Calls `each(line_number, value)` for every non-empty line of a JSONL file; a line that is not
/// a JSON object is an error naming `file:line`.
pub(crate) fn for_each_line(path: &Path, each: &mut dyn FnMut(usize, &Value) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| GraftError::io(path, e))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.map_err(|e| GraftError::Input(format!("{at}: {e}")))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| GraftError::Input(format!("{at}: not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(GraftError::Input(format!("{at}: expected a JSON object")));
        }
        each(i + 1, &v)?;
    }
    Ok(())
}

/// The string field `key` of a JSONL line; missing or not a string is an error naming `at`.
pub(crate) fn string_field<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(GraftError::Input(format!("{at}: field `{key}` must be a string, found {other}"))),
        None => Err(GraftError::Input(format!("{at}: missing field `{key}`"))),
    }
}

fn line_id(v: &Value, at: &str) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => at.to_string(),
    }
}

/// Reads summarization pairs (`messages` or `document`/`summary` lines).
pub fn read_summarize_file(path: &Path) -> Result<(Vec<SummaryPair>, SkipReport)> {
    let mut pairs = Vec::new();
    let mut report = SkipReport::default();
    for_each_line(path, &mut |line, v| {
        let at = format!("{}:{line}", path.display());
        report.n_lines += 1;
        let (document, summary) = if let Some(messages) = v.get("messages") {
            let msgs = messages
                .as_array()
                .ok_or_else(|| GraftError::Input(format!("{at}: field `messages` must be an array")))?;
            let content = |m: &Value, j: usize| -> Result<(String, String)> {
                Ok((
                    string_field(m, "role", &format!("{at}: messages[{j}]"))?.to_string(),
                    string_field(m, "content", &format!("{at}: messages[{j}]"))?.to_string(),
                ))
            };
            let msgs = msgs.iter().enumerate().map(|(j, m)| content(m, j)).collect::<Result<Vec<_>>>()?;
            let (Some((last_role, summary)), Some((_, user))) =
                (msgs.last(), msgs.iter().rev().find(|(r, _)| r == "user"))
            else {
                return Err(GraftError::Input(format!(
                    "{at}: `messages` needs a user message and a final assistant message"
                )));
            };
            if last_role != "assistant" {
                return Err(GraftError::Input(format!(
                    "{at}: the last message must be the assistant's reference summary"
                )));
            }
            let document = user.strip_prefix(SUMMARIZE_INSTRUCTION).unwrap_or(user).trim().to_string();
            (document, summary.clone())
        } else if v.get("document").is_some() || v.get("summary").is_some() {
            (string_field(v, "document", &at)?.to_string(), string_field(v, "summary", &at)?.to_string())
        } else {
            return Err(GraftError::Input(format!("{at}: expected `messages` or `document` and `summary` fields")));
        };
        if document.trim().is_empty() || summary.trim().is_empty() {
            report.skip(format!("{at}: empty {}", if document.trim().is_empty() { "document" } else { "summary" }));
            return Ok(());
        }
        pairs.push(SummaryPair { id: line_id(v, &at), document, summary: summary.trim().to_string() });
        Ok(())
    })?;
    Ok((pairs, report))
}

/// The gold answers of a SQuAD line, in either form; `answer_start` may be absent.
fn parse_answers(v: &Value, at: &str) -> Result<Vec<(String, Option<usize>)>> {
    let bad = |what: &str| GraftError::Input(format!("{at}: field `answers` {what}"));
    let start = |x: Option<&Value>| -> Result<Option<usize>> {
        match x {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad("has an `answer_start` that is not a non-negative integer")),
        }
    };
    match v.get("answers") {
        Some(Value::Object(o)) => {
            let texts = o.get("text").and_then(Value::as_array).ok_or_else(|| bad("must have a `text` list"))?;
            let starts = match o.get("answer_start") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(bad("`answer_start` must be a list")),
            };
            if !starts.is_empty() && starts.len() != texts.len() {
                return Err(bad("has different numbers of `text` and `answer_start` entries"));
            }
            texts
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    Ok((
                        t.as_str().ok_or_else(|| bad("`text` entries must be strings"))?.to_string(),
                        start(starts.get(j))?,
                    ))
                })
                .collect()
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                Ok((
                    a.get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("entries need a string `text`"))?
                        .to_string(),
                    start(a.get("answer_start"))?,
                ))
            })
            .collect(),
        Some(_) => Err(bad(
            "must be an object {\"text\": [...], \"answer_start\": [...]} or a list of {\"text\", \"answer_start\"}",
        )),
        None => Err(GraftError::Input(format!("{at}: missing field `answers`"))),
    }
}

/// Reads a SQuAD-style JSONL file; questions whose answers are not in their context are skipped
/// and counted.
pub fn read_qa_file(path: &Path) -> Result<(Vec<QaItem>, SkipReport)> {
    let mut items = Vec::new();
    let mut report = SkipReport::default();
    for_each_line(path, &mut |line, v| {
        let at = format!("{}:{line}", path.display());
        report.n_lines += 1;
        let context = string_field(v, "context", &at)?.to_string();
        let question = string_field(v, "question", &at)?.to_string();
        let mut answers = Vec::new();
        for (text, start) in parse_answers(v, &at)? {
            let Some(start) = start.or_else(|| char_find(&context, &text)) else {
                report.skip(format!("{at}: answer `{text}` does not occur in the context"));
                return Ok(());
            };
            answers.push(Answer { text, start });
        }
        let item = QaItem { id: line_id(v, &at), context, question, answers };
        match item.check() {
            Ok(()) => items.push(item),
            Err(why) => report.skip(format!("{at}: {why}")),
        }
        Ok(())
    })?;
    Ok((items, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let p = dir.path().join("f.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn qa_reads_both_answer_forms_and_skips_answers_outside_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            concat!(
                r#"{"id": "a", "context": "Café Paris is in France.", "question": "Where?", "answers": {"text": ["France"], "answer_start": [17]}}"#,
                "\n",
                r#"{"context": "Rust is fast.", "question": "What is fast?", "answers": [{"text": "Rust", "answer_start": 0}]}"#,
                "\n",
                "\n",
                r#"{"context": "abc", "question": "q", "answers": [{"text": "b"}]}"#,
                "\n",
                r#"{"context": "abc", "question": "q", "answers": {"text": ["zzz"], "answer_start": [0]}}"#,
                "\n",
                r#"{"context": "abc", "question": "q", "answers": {"text": ["b"], "answer_start": [0]}}"#,
                "\n",
                r#"{"context": "abc", "question": "q", "answers": {"text": [], "answer_start": []}}"#,
                "\n",
            ),
        );
        let (items, report) = read_qa_file(&p).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].answers,
            vec![Answer { text: "France".into(), start: 17 }],
            "offsets count characters (é is one)"
        );
        assert_eq!(items[1].id, format!("{}:2", p.display()));
        assert_eq!(items[2].answers[0].start, 1, "a missing answer_start is found");
        assert_eq!(report.n_lines, 6);
        assert_eq!(report.n_skipped, 3);
        assert!(
            report.skipped[0].ends_with(":5: answer `zzz` is not in the context at character 0"),
            "{:?}",
            report.skipped
        );
        assert!(report.skipped[1].contains(":6: answer `b` is not in the context at character 0"));
        assert!(report.skipped[2].contains(":7: no answer"));
    }

    #[test]
    fn qa_malformed_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let ok = r#"{"context": "abc", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}}"#;
        for (bad, want) in [
            ("{not json", "not valid JSON"),
            (r#"{"question": "q", "answers": []}"#, "missing field `context`"),
            (r#"{"context": 3, "question": "q", "answers": []}"#, "field `context` must be a string"),
            (r#"{"context": "a", "question": "q", "answers": "a"}"#, "field `answers` must be an object"),
            (r#"{"context": "a", "question": "q", "answers": {"text": ["a"], "answer_start": [-1]}}"#, "answer_start"),
            (
                r#"{"context": "a", "question": "q", "answers": {"text": ["a", "b"], "answer_start": [0]}}"#,
                "different numbers",
            ),
            ("[1]", "expected a JSON object"),
        ] {
            let p = file(&dir, &format!("{ok}\n{bad}\n"));
            let err = read_qa_file(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("{}:2", p.display())) && err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn summarize_reads_messages_and_pairs_and_skips_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let pair = SummaryPair { id: "x".into(), document: "A long text.".into(), summary: "Short.".into() };
        let p = file(
            &dir,
            &format!(
                "{}\n{}\n{}\n{}\n",
                pair.to_messages_json(),
                r#"{"document": "Doc two.", "summary": "Sum two."}"#,
                r#"{"document": "Doc three.", "summary": "  "}"#,
                r#"{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "s"}]}"#,
            ),
        );
        let (pairs, report) = read_summarize_file(&p).unwrap();
        assert_eq!(pairs[0], pair, "a written pair reads back");
        assert_eq!(pairs[1].document, "Doc two.");
        assert_eq!(pairs.len(), 2);
        assert_eq!((report.n_lines, report.n_skipped), (4, 2));
        assert!(report.skipped[0].ends_with(":3: empty summary"), "{:?}", report.skipped);
        assert!(report.skipped[1].ends_with(":4: empty document"));
    }

    #[test]
    fn summarize_malformed_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (bad, want) in [
            (r#"{"text": "x"}"#, "expected `messages` or `document`"),
            (r#"{"document": "x"}"#, "missing field `summary`"),
            (
                r#"{"messages": [{"role": "assistant", "content": "s"}, {"role": "user", "content": "d"}]}"#,
                "last message",
            ),
            (r#"{"messages": [{"role": "assistant"}]}"#, "messages[0]: missing field `content`"),
        ] {
            let p = file(&dir, &format!("\n{bad}\n"));
            let err = read_summarize_file(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("{}:2", p.display())) && err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn written_qa_lines_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let item = QaItem {
            id: "q1".into(),
            context: "ünï: code".into(),
            question: "What?".into(),
            answers: vec![Answer { text: "code".into(), start: 5 }],
        };
        item.check().unwrap();
        let p = dir.path().join("qa.jsonl");
        assert_eq!(write_jsonl(&p, [item.to_json()]).unwrap(), 1);
        let (items, report) = read_qa_file(&p).unwrap();
        assert_eq!((items, report.n_skipped), (vec![item], 0));
    }
}
