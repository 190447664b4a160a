//! Turning JSONL records of each format into supervised token sequences.

use super::chat::{template_of, tokenize_chat};
use super::jsonl::for_each_line;
use super::{DataError, DataFormat, Example, LoadReport};
use crate::tokenizer::{Message, Tokenizer, CHAT_ROLES};
use serde_json::Value;
use std::path::Path;

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    match v.get(name) {
        None => Err(format!("missing field `{name}`")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("field `{name}` must be a string, found {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn messages_of(v: &Value) -> Result<Vec<Message>, String> {
    let list = match v.get("messages") {
        None => return Err("missing field `messages`".into()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("field `messages` must be an array, found {}", kind(other))),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = field(m, "role").map_err(|e| format!("messages[{i}]: {e}"))?;
        if !CHAT_ROLES.contains(&role) {
            return Err(format!("messages[{i}]: unknown role `{role}` (expected one of {CHAT_ROLES:?})"));
        }
        let content = field(m, "content").map_err(|e| format!("messages[{i}]: {e}"))?;
        out.push(Message { role: role.into(), content: content.into() });
    }
    if !out.iter().any(|m| m.role == "assistant") {
        return Err("`messages` has no assistant turn, so nothing would be learned".into());
    }
    Ok(out)
}

/// Tokens of one chat with supervision on assistant content and the end-of-turn token closing
/// it (EOS); appends a supervised EOS if the template does not close assistant turns with one.
fn chat_example(tok: &Tokenizer, messages: &[Message], eos: u32) -> crate::Result<Example> {
    let template = template_of(tok)?;
    let pieces = tokenize_chat(tok, &template, messages, false)?;
    let (mut ids, mut supervised) = (Vec::new(), Vec::new());
    let mut open_assistant = false;
    for p in pieces {
        match p.message {
            Some(i) => {
                let is_assistant = messages[i].role == "assistant";
                ids.extend_from_slice(&p.ids);
                supervised.extend(std::iter::repeat_n(is_assistant, p.ids.len()));
                open_assistant = is_assistant;
            }
            None => {
                for id in p.ids {
                    ids.push(id);
                    supervised.push(open_assistant);
                    if id == eos {
                        open_assistant = false;
                    }
                }
                // Template text after an assistant turn is supervised only up to its EOS.
                open_assistant = false;
            }
        }
    }
    // End the sample at the EOS closing the last assistant turn (dropping template text after
    // it), or append a supervised EOS when the template does not close turns with one.
    match supervised.iter().rposition(|&s| s) {
        Some(last) if ids[last] == eos => {
            ids.truncate(last + 1);
            supervised.truncate(last + 1);
        }
        _ => {
            ids.push(eos);
            supervised.push(true);
        }
    }
    Ok(Example { ids, supervised })
}

fn record_example(v: &Value, format: DataFormat, tok: &Tokenizer, eos: u32) -> Result<crate::Result<Example>, String> {
    let plain = |t: &str| tok.encode_plain(t).map_err(crate::GraftError::from);
    Ok(match format {
        DataFormat::Text => {
            let text = field(v, "text")?;
            plain(text).map(|mut ids| {
                ids.push(eos);
                let supervised = vec![true; ids.len()];
                Example { ids, supervised }
            })
        }
        DataFormat::PromptCompletion => {
            let (prompt, completion) = (field(v, "prompt")?, field(v, "completion")?);
            if completion.is_empty() {
                return Err("field `completion` is empty".into());
            }
            plain(prompt).and_then(|p| {
                let mut c = plain(completion)?;
                c.push(eos);
                let supervised = std::iter::repeat_n(false, p.len()).chain(std::iter::repeat_n(true, c.len())).collect();
                Ok(Example { ids: [p, c].concat(), supervised })
            })
        }
        DataFormat::Messages => chat_example(tok, &messages_of(v)?, eos),
        DataFormat::Alpaca => {
            let instruction = field(v, "instruction")?;
            let input = match v.get("input") {
                None | Some(Value::Null) => "",
                Some(Value::String(s)) => s,
                Some(other) => return Err(format!("field `input` must be a string, found {}", kind(other))),
            };
            let output = field(v, "output")?;
            let user = if input.is_empty() { instruction.to_string() } else { format!("{instruction}\n\n{input}") };
            let messages = [Message { role: "user".into(), content: user }, Message { role: "assistant".into(), content: output.into() }];
            chat_example(tok, &messages, eos)
        }
    })
}

/// Reads and tokenizes every record of `path`, truncating samples to `seq_len` tokens (the
/// start is kept; a truncated sample loses its final EOS, and is counted).
pub fn load_examples(path: &Path, format: DataFormat, tok: &Tokenizer, seq_len: usize) -> Result<(Vec<Example>, LoadReport), DataError> {
    let eos = tok.eos_id().ok_or_else(|| DataError::Render { path: path.into(), line: 0, reason: "the tokenizer has no EOS token".into() })?;
    let mut examples = Vec::new();
    let mut report = LoadReport::default();
    for_each_line(path, |line, v| {
        let bad = |reason: String| DataError::Line { path: path.into(), line, reason };
        if !v.is_object() {
            return Err(bad(format!("expected a JSON object, found {}", kind(&v))));
        }
        let mut ex = record_example(&v, format, tok, eos)
            .map_err(bad)?
            .map_err(|e| DataError::Render { path: path.into(), line, reason: e.to_string() })?;
        if ex.ids.len() > seq_len {
            ex.ids.truncate(seq_len);
            ex.supervised.truncate(seq_len);
            report.n_truncated += 1;
        }
        // The first token is never a target (nothing precedes it).
        if let Some(first) = ex.supervised.first_mut() {
            *first = false;
        }
        if ex.supervised.iter().any(|&s| s) {
            report.n_tokens += ex.ids.len();
            report.n_supervised_tokens += ex.supervised.iter().filter(|&&s| s).count();
            examples.push(ex);
        }
        Ok(())
    })?;
    if examples.is_empty() {
        let after = if report.n_truncated > 0 { "after truncation to data.seq_len (no supervised token left)" } else { "in the file" };
        return Err(DataError::Empty { path: path.into(), after: after.into() });
    }
    report.n_examples = examples.len();
    Ok((examples, report))
}
