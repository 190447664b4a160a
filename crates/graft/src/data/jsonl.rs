//! Streaming JSONL lines: one line at a time, never more than a cap, BOM and CRLF tolerated.

use super::{DataError, LineProblem};
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// Longest line read by default (64 MiB): a larger line is an error, not an allocation.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// One line of the file.
pub(crate) enum RawLine<'a> {
    /// The line's bytes without the line end (`\n` or `\r\n`) and, on line 1, without a BOM.
    Bytes(&'a [u8]),
    /// The line is longer than the cap; its bytes were read and dropped.
    TooLong,
}

/// Reads lines from `reader` into one reused buffer of at most `cap` bytes.
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    cap: usize,
    line: usize,
}

impl<R: BufRead> LineReader<R> {
    /// A reader whose lines may hold at most `cap` bytes (line end excluded).
    pub(crate) fn new(reader: R, cap: usize) -> Self {
        Self { reader, buf: Vec::new(), cap, line: 0 }
    }

    /// The next line and its 1-based number; `None` at the end of the file. A final line end is
    /// not followed by an empty line.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(usize, RawLine<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if !too_long {
                if self.buf.len() + chunk.len() > self.cap {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = newline.map_or(available.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                break;
            }
        }
        self.line += 1;
        if too_long {
            return Ok(Some((self.line, RawLine::TooLong)));
        }
        let mut bytes = self.buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if self.line == 1 {
            if let Some(rest) = bytes.strip_prefix("\u{feff}".as_bytes()) {
                bytes = rest;
            }
        }
        Ok(Some((self.line, RawLine::Bytes(bytes))))
    }
}

/// Calls `each(line, text)` with every non-empty line of the JSONL file `path` and its 1-based
/// number, strictly: a line over [`DEFAULT_MAX_LINE_BYTES`], an empty line before more data or bad
/// UTF-8 is an error naming `file:line`, as is whatever `each` returns as `(column, problem)`.
/// Trailing empty lines are allowed.
pub(crate) fn for_each_strict_line(
    path: &Path,
    mut each: impl FnMut(usize, &str) -> Result<(), (Option<usize>, LineProblem)>,
) -> Result<(), DataError> {
    let io_err = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut lines = LineReader::new(BufReader::with_capacity(1 << 16, file), DEFAULT_MAX_LINE_BYTES);
    let line_err = |line, column, problem| DataError::Line { path: path.into(), line, column, problem };
    let mut pending_empty: Option<usize> = None;
    while let Some((line, raw)) = lines.next_line().map_err(io_err)? {
        let RawLine::Bytes(bytes) = raw else {
            return Err(DataError::LineTooLong { path: path.into(), line, cap: DEFAULT_MAX_LINE_BYTES });
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
        each(line, text).map_err(|(column, problem)| line_err(line, column, problem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], cap: usize) -> Vec<(usize, Option<Vec<u8>>)> {
        // A tiny buffer makes lines straddle many `fill_buf` calls.
        let mut r = LineReader::new(io::BufReader::with_capacity(3, data), cap);
        let mut out = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            out.push((
                n,
                match l {
                    RawLine::Bytes(b) => Some(b.to_vec()),
                    RawLine::TooLong => None,
                },
            ));
        }
        out
    }

    #[test]
    fn line_ends_bom_and_cap() {
        // The cap counts every byte but the `\n` (BOM and `\r` included).
        let got = lines(b"\xef\xbb\xbfab\r\n\ncdefghi\nij", 6);
        assert_eq!(got, vec![(1, Some(b"ab".to_vec())), (2, Some(vec![])), (3, None), (4, Some(b"ij".to_vec()))]);
        assert_eq!(lines(b"a\n", 4), vec![(1, Some(b"a".to_vec()))]);
        assert!(lines(b"", 4).is_empty());
    }
}
