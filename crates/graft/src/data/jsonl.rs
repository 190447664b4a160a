//! Streaming JSONL reading with line-precise errors.

use super::DataError;
use std::io::{BufRead, Read};
use std::path::Path;

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Calls `each(line_number, value)` for every line of `path`. Tolerates a BOM and CRLF; an
/// empty line, invalid UTF-8 or invalid JSON is an error naming the line.
pub fn for_each_line(path: &Path, mut each: impl FnMut(usize, serde_json::Value) -> Result<(), DataError>) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.len() > MAX_LINE_BYTES {
            return Err(DataError::LineTooLong { path: path.to_path_buf(), line, cap: MAX_LINE_BYTES });
        }
        let mut bytes: &[u8] = &buf;
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        while let [rest @ .., b'\n' | b'\r'] = bytes {
            bytes = rest;
        }
        let bad = |reason: String| DataError::Line { path: path.to_path_buf(), line, reason };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        if text.trim().is_empty() {
            return Err(bad("empty line (remove it: every line must be one JSON object)".into()));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON at column {}: {e}", e.column())))?;
        each(line, value)?;
    }
}
