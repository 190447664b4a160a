//! Reading the `text` field of every line of a JSONL file (inputs to embed, classify, score),
//! or its `text` and `label` (classification data for heads on features).

use super::jsonl::for_each_strict_line;
use super::record::{parse_line, parse_object, string_fields, Record};
use super::{DataError, DataFormat};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Reads `{"text": ...}` lines from `path`, strictly and one line at a time: the first malformed
/// line (bad UTF-8 or JSON, not an object, `text` missing or not a string, an empty line before
/// more data, a line over 64 MiB) is an error naming `file:line` and the problem. Other keys are
/// ignored; trailing empty lines are allowed. A file without any line is
/// [`DataError::EmptyDataset`].
pub fn read_texts(path: &Path) -> Result<Vec<String>, DataError> {
    let mut texts = Vec::new();
    let mut ignored = BTreeSet::new();
    for_each_strict_line(path, |_, text| match parse_line(text, DataFormat::Text, &mut ignored)? {
        Record::Text(t) => {
            texts.push(t);
            Ok(())
        }
        _ => unreachable!("the text format parses to Record::Text"),
    })?;
    if texts.is_empty() {
        return Err(DataError::EmptyDataset { path: path.into(), after: "in the file (it has no JSON lines)".into() });
    }
    Ok(texts)
}

/// One `{"text": ..., "label": ...}` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The text.
    pub text: String,
    /// Its label, as written.
    pub label: String,
    /// Its 1-based line number.
    pub line: usize,
}

/// Reads `{"text": ..., "label": ...}` lines from `path` (both strings; other keys ignored) as
/// strictly as [`read_texts`]: the first malformed line is an error naming `file:line`, and a
/// file without lines is [`DataError::EmptyDataset`].
pub fn read_labelled(path: &Path) -> Result<Vec<Labelled>, DataError> {
    Ok(read_string_fields(path, &["text", "label"])?
        .into_iter()
        .map(|(line, fields)| {
            let mut fields = fields.into_iter();
            let (text, label) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
            Labelled { text, label, line }
        })
        .collect())
}

/// Reads the string fields `keys` of every line of `path`, in that order, with each line's
/// 1-based number (other keys ignored), as strictly as [`read_texts`]: the first malformed line
/// (or one missing a key, or with a non-string value) is an error naming `file:line`, and a file
/// without lines is [`DataError::EmptyDataset`]. For files of pairs, such as retrieval queries
/// and their targets.
pub fn read_string_fields(path: &Path, keys: &[&str]) -> Result<Vec<(usize, Vec<String>)>, DataError> {
    let mut out = Vec::new();
    for_each_strict_line(path, |line, text| {
        out.push((line, string_fields(text, keys)?));
        Ok(())
    })?;
    if out.is_empty() {
        return Err(DataError::EmptyDataset { path: path.into(), after: "in the file (it has no JSON lines)".into() });
    }
    Ok(out)
}

/// One JSONL line parsed as an object, with its 1-based line number.
pub type NumberedObject = (usize, Map<String, Value>);

/// Reads every line of `path` as a JSON object, with its 1-based line number, as strictly as
/// [`read_texts`]: the first malformed line (not JSON, not an object, an empty line before more
/// data) is an error naming `file:line`, and a file without lines is
/// [`DataError::EmptyDataset`]. For result files whose fields differ from line to line.
pub fn read_objects(path: &Path) -> Result<Vec<NumberedObject>, DataError> {
    let mut out = Vec::new();
    for_each_strict_line(path, |line, text| {
        out.push((line, parse_object(text)?));
        Ok(())
    })?;
    if out.is_empty() {
        return Err(DataError::EmptyDataset { path: path.into(), after: "in the file (it has no JSON lines)".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &str) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, content).unwrap();
        read_texts(&path).map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn texts_in_order_with_extra_keys_and_trailing_blank_lines() {
        let got = read("{\"text\": \"a\", \"id\": 1}\r\n{\"text\": \"\"}\n{\"text\": \"é\"}\n\n").unwrap();
        assert_eq!(got, vec!["a", "", "é"]);
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(
            read("{\"text\": \"a\"}\n{\"txt\": \"b\"}\n").unwrap_err(),
            "FILE:2: missing field `text` (format `text` expects {\"text\": \"...\"})"
        );
        let err = read("{\"text\": \"a\"}\n{\"text\": \"b\"\n").unwrap_err();
        assert!(err.starts_with("FILE:2:") && err.contains("not valid JSON"), "{err}");
        assert_eq!(read("{\"text\": 3}\n").unwrap_err(), "FILE:1: field `text` must be a string, found a number");
        assert!(read("{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n").unwrap_err().starts_with("FILE:2: empty line"));
        assert!(read("").unwrap_err().contains("no usable samples"));
    }
}
