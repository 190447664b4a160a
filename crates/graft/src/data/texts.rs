//! Reading the `text` field of every line of a JSONL file (inputs to embed, classify, score).

use super::jsonl::{LineReader, RawLine, DEFAULT_MAX_LINE_BYTES};
use super::record::{parse_line, Record};
use super::{DataError, DataFormat, LineProblem};
use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::Path;

/// Reads `{"text": ...}` lines from `path`, strictly and one line at a time: the first malformed
/// line (bad UTF-8 or JSON, not an object, `text` missing or not a string, an empty line before
/// more data, a line over 64 MiB) is an error naming `file:line` and the problem. Other keys are
/// ignored; trailing empty lines are allowed. A file without any line is
/// [`DataError::EmptyDataset`].
pub fn read_texts(path: &Path) -> Result<Vec<String>, DataError> {
    let io_err = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut lines = LineReader::new(BufReader::with_capacity(1 << 16, file), DEFAULT_MAX_LINE_BYTES);
    let line_err = |line, column, problem| DataError::Line { path: path.into(), line, column, problem };
    let mut texts = Vec::new();
    let mut ignored = BTreeSet::new();
    let mut pending_empty: Option<usize> = None;
    while let Some((line, raw)) = lines.next_line().map_err(io_err)? {
        let bytes = match raw {
            RawLine::TooLong => {
                return Err(DataError::LineTooLong { path: path.into(), line, cap: DEFAULT_MAX_LINE_BYTES })
            }
            RawLine::Bytes(b) => b,
        };
        if bytes.trim_ascii().is_empty() {
            pending_empty.get_or_insert(line);
            continue;
        }
        if let Some(empty) = pending_empty.take() {
            return Err(line_err(empty, None, LineProblem::EmptyLine));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| line_err(line, Some(e.valid_up_to() + 1), LineProblem::BadUtf8))?;
        match parse_line(text, DataFormat::Text, &mut ignored) {
            Ok(Record::Text(t)) => texts.push(t),
            Ok(_) => unreachable!("the text format parses to Record::Text"),
            Err((column, problem)) => return Err(line_err(line, column, problem)),
        }
    }
    if texts.is_empty() {
        return Err(DataError::EmptyDataset { path: path.into(), after: "in the file (it has no JSON lines)".into() });
    }
    Ok(texts)
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
