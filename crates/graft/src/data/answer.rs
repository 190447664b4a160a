//! Training records whose answer another model rewrites (sequence-level distillation): the
//! prompt a model answers in each record's place, and the same JSON line with the answer
//! replaced, so that the rewritten file trains exactly like the original.

use super::jsonl::for_each_strict_line;
use super::record::parse_line;
use super::render::Renderer;
use super::{DataError, DataFormat, LineProblem};
use crate::tokenizer::Tokenizer;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// One line of a training file, ready to be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// The prompt's token ids for the answering model (chat template and assistant header
    /// included for conversations).
    pub prompt_ids: Vec<u32>,
    /// The line as read; every key, known or not, is written back.
    object: Map<String, Value>,
    /// Where the answer lives.
    format: DataFormat,
}

impl AnswerRecord {
    /// The answer the line holds now (the last assistant message's `content` in `messages`,
    /// `output` in `alpaca`, `completion` in `prompt_completion`): the gold label when the file
    /// is a classification task's held-out split.
    pub fn answer(&self) -> Option<&str> {
        match self.format {
            DataFormat::Messages => self.object.get("messages")?.as_array()?.last()?.get("content")?.as_str(),
            DataFormat::Alpaca => self.object.get("output")?.as_str(),
            DataFormat::PromptCompletion => self.object.get("completion")?.as_str(),
            DataFormat::Text => None,
        }
    }

    /// The line with its answer replaced by `answer` (the last assistant message's `content` in
    /// `messages`, `output` in `alpaca`, `completion` in `prompt_completion`) and `extra` keys
    /// set at the top level, as one JSON line without its line end. Keys come out sorted.
    pub fn answered(&self, answer: &str, extra: &[(&str, Value)]) -> String {
        let mut object = self.object.clone();
        let answer = Value::String(answer.to_string());
        match self.format {
            DataFormat::Messages => {
                // `read_answer_records` checked that the last message is the assistant's, an object.
                if let Some(Value::Object(last)) = object.get_mut("messages").and_then(|m| m.as_array_mut()?.last_mut())
                {
                    last.insert("content".into(), answer);
                }
            }
            DataFormat::Alpaca => {
                object.insert("output".into(), answer);
            }
            DataFormat::PromptCompletion => {
                object.insert("completion".into(), answer);
            }
            DataFormat::Text => {}
        }
        for (key, value) in extra {
            object.insert((*key).to_string(), value.clone());
        }
        Value::Object(object).to_string()
    }
}

/// Reads every line of `path` in `format` and renders its prompt with `tok`, strictly (the
/// first malformed line is an error naming its line, as in training; empty lines only at the
/// end). Only formats with an answer are accepted: `messages` (the last assistant message is
/// the answer; earlier turns stay as they are), `alpaca` and `prompt_completion`.
pub fn read_answer_records(path: &Path, format: DataFormat, tok: &Tokenizer) -> Result<Vec<AnswerRecord>, DataError> {
    if format == DataFormat::Text {
        return Err(DataError::Argument(
            "format `text` has no prompt and answer: teacher answers need `messages`, `alpaca` or \
             `prompt_completion` lines"
                .into(),
        ));
    }
    let renderer = Renderer::new(tok)?;
    if format.needs_chat_template() && renderer.template().is_none() {
        return Err(DataError::NoChatTemplate { format });
    }
    let mut records = Vec::new();
    let mut ignored = BTreeSet::new();
    for_each_strict_line(path, |line, text| {
        let record = parse_line(text, format, &mut ignored)?;
        let prompt_ids = renderer.answer_prompt(&record).map_err(|p| (None, p))?;
        let object = match serde_json::from_str(text) {
            Ok(Value::Object(object)) => object,
            // `parse_line` accepted the line, so it is a JSON object.
            _ => return Err((None, LineProblem::NotObject { found: "another value" })),
        };
        records.push(AnswerRecord { line, prompt_ids, object, format });
        Ok(())
    })?;
    if records.is_empty() {
        return Err(DataError::EmptyDataset { path: path.into(), after: "in the file (it has no JSON lines)".into() });
    }
    Ok(records)
}
