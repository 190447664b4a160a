//! One JSONL line of a given format → the fields graft trains on, with precise field errors.

use super::{DataFormat, LineProblem};
use crate::tokenizer::{Message, CHAT_ROLES};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The content of one line, independent of its JSON spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// Free text, every token supervised.
    Text(String),
    /// A prompt and the completion to learn.
    PromptCompletion {
        /// Context, not learned.
        prompt: String,
        /// Learned.
        completion: String,
    },
    /// A conversation; assistant turns are learned.
    Chat(Vec<Message>),
}

/// Parses one line (already valid UTF-8) in `format`. Keys the format does not use are added to
/// `ignored` (as `key`, or `messages[].key` inside messages).
pub(crate) fn parse_line(
    line: &str,
    format: DataFormat,
    ignored: &mut BTreeSet<String>,
) -> Result<Record, (Option<usize>, LineProblem)> {
    record(&parse_object(line)?, format, ignored).map_err(|p| (None, p))
}

/// The string fields `keys` of one line (already valid UTF-8) that must be a JSON object;
/// other keys are ignored.
pub(crate) fn string_fields(line: &str, keys: &[&str]) -> Result<Vec<String>, (Option<usize>, LineProblem)> {
    let obj = parse_object(line)?;
    keys.iter().map(|k| string_field(&obj, k, k).map_err(|p| (None, p))).collect()
}

pub(crate) fn parse_object(line: &str) -> Result<Map<String, Value>, (Option<usize>, LineProblem)> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| (Some(e.column()), LineProblem::NotJson { reason: json_reason(&e) }))?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err((None, LineProblem::NotObject { found: kind(&other) })),
    }
}

fn record(obj: &Map<String, Value>, format: DataFormat, ignored: &mut BTreeSet<String>) -> Result<Record, LineProblem> {
    let used: &[&str] = match format {
        DataFormat::Text => &["text"],
        DataFormat::PromptCompletion => &["prompt", "completion"],
        DataFormat::Messages => &["messages"],
        DataFormat::Alpaca => &["instruction", "input", "output"],
    };
    ignored.extend(obj.keys().filter(|k| !used.contains(&k.as_str())).cloned());
    let field = |name: &str| string_field(obj, name, name).map_err(|p| with_hint(p, obj, format));
    match format {
        DataFormat::Text => Ok(Record::Text(field("text")?)),
        DataFormat::PromptCompletion => {
            Ok(Record::PromptCompletion { prompt: field("prompt")?, completion: field("completion")? })
        }
        DataFormat::Alpaca => {
            let instruction = field("instruction")?;
            let input = match obj.get("input") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(LineProblem::WrongType {
                        field: "input".into(),
                        expected: "a string (or absent)",
                        found: kind(other),
                    })
                }
            };
            let output = field("output")?;
            let user = if input.is_empty() { instruction } else { format!("{instruction}\n\n{input}") };
            Ok(Record::Chat(vec![Message::user(user), Message::assistant(output)]))
        }
        DataFormat::Messages => {
            let list = match obj.get("messages") {
                Some(Value::Array(list)) => list,
                Some(other) => {
                    return Err(LineProblem::WrongType {
                        field: "messages".into(),
                        expected: "an array of {\"role\", \"content\"} objects",
                        found: kind(other),
                    })
                }
                None => return Err(with_hint(missing("messages"), obj, format)),
            };
            let messages =
                list.iter().enumerate().map(|(i, m)| message(m, i, ignored)).collect::<Result<Vec<_>, _>>()?;
            check_conversation(&messages)?;
            Ok(Record::Chat(messages))
        }
    }
}

fn message(v: &Value, i: usize, ignored: &mut BTreeSet<String>) -> Result<Message, LineProblem> {
    let Value::Object(m) = v else {
        return Err(LineProblem::WrongType {
            field: format!("messages[{i}]"),
            expected: "an object with `role` and `content`",
            found: kind(v),
        });
    };
    ignored.extend(m.keys().filter(|k| *k != "role" && *k != "content").map(|k| format!("messages[].{k}")));
    let role = string_field(m, "role", &format!("messages[{i}].role"))?;
    if !CHAT_ROLES.contains(&role.as_str()) {
        return Err(LineProblem::UnknownRole { field: format!("messages[{i}].role"), role });
    }
    let content = string_field(m, "content", &format!("messages[{i}].content"))?;
    Ok(Message { role, content })
}

/// The conversation rules of docs/data.md: a system message only first, at least one assistant
/// turn, and the last turn the assistant's (turns after it would not be learned from).
fn check_conversation(messages: &[Message]) -> Result<(), LineProblem> {
    if messages.is_empty() {
        return Err(LineProblem::Conversation("`messages` is empty".into()));
    }
    if let Some(i) = messages.iter().skip(1).position(|m| m.role == "system") {
        return Err(LineProblem::Conversation(format!(
            "messages[{}] is a system message; a system message may only be the first",
            i + 1
        )));
    }
    match messages.last().map(|m| m.role.as_str()) {
        Some("assistant") => Ok(()),
        _ if !messages.iter().any(|m| m.role == "assistant") => Err(LineProblem::Conversation(
            "the conversation has no assistant message, so there is nothing to learn".into(),
        )),
        _ => Err(LineProblem::Conversation(format!(
            "the last message (messages[{}]) is not from the assistant; turns after the last assistant \
             message would not be learned from: remove them",
            messages.len() - 1
        ))),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, LineProblem> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(LineProblem::WrongType { field: path.into(), expected: "a string", found: kind(other) }),
        None => Err(missing(path)),
    }
}

fn missing(path: &str) -> LineProblem {
    LineProblem::MissingField { field: path.into(), hint: String::new() }
}

/// Adds "this line looks like format X" to a missing top-level field.
fn with_hint(p: LineProblem, obj: &Map<String, Value>, format: DataFormat) -> LineProblem {
    let LineProblem::MissingField { field, .. } = p else { return p };
    let has = |k: &str| obj.contains_key(k);
    let guess = if has("messages") {
        Some(DataFormat::Messages)
    } else if has("instruction") && has("output") {
        Some(DataFormat::Alpaca)
    } else if has("prompt") && has("completion") {
        Some(DataFormat::PromptCompletion)
    } else if has("text") {
        Some(DataFormat::Text)
    } else {
        None
    };
    let hint = match guess {
        Some(g) if g != format => {
            format!(" (the line looks like format `{g}`: set the data format to `{g}`)")
        }
        _ => format!(" (format `{format}` expects {})", format.example_line()),
    };
    LineProblem::MissingField { field, hint }
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the location is reported separately.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The JSON type of `v`, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
