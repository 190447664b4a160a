//! Reading a JSONL file into examples: line by line, strict or skipping bad rows, truncated to
//! `seq_len`, with a report of what was kept.

use super::jsonl::{LineReader, RawLine, DEFAULT_MAX_LINE_BYTES};
use super::record::{parse_line, Record};
use super::render::Renderer;
use super::{DataError, DataFormat, Example, LineProblem};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::Path;

/// How many skipped-line messages a report keeps.
const MAX_SKIPPED_MESSAGES: usize = 20;

/// How a file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Longest line accepted, in bytes (line end excluded). Default 64 MiB.
    pub max_line_bytes: usize,
    /// Skip malformed lines and empty lines, counting them in the report, instead of failing on
    /// the first one. Default false (strict).
    pub skip_bad_rows: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { max_line_bytes: DEFAULT_MAX_LINE_BYTES, skip_bad_rows: false }
    }
}

/// What loading a file kept and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Samples kept.
    pub n_examples: usize,
    /// Samples longer than `seq_len` (cut to it, or dropped: see `n_dropped`).
    pub n_truncated: usize,
    /// Supervised tokens (loss targets) over the kept samples.
    pub n_supervised_tokens: usize,
    /// Tokens over the kept samples.
    pub n_tokens: usize,
    /// Samples removed because truncation left none of their supervised tokens.
    pub n_dropped: usize,
    /// Malformed lines skipped (only with `skip_bad_rows`).
    pub n_skipped: usize,
    /// The first skipped lines' errors (`file:line: problem`).
    pub skipped: Vec<String>,
    /// Keys present in the file that the format does not use (`messages[].name` for keys inside
    /// messages), sorted.
    pub ignored_fields: Vec<String>,
}

/// Reads `path` as JSONL in `format` and tokenizes every line into an [`Example`] of at most
/// `seq_len` tokens, strictly: the first malformed line is an error naming it. See
/// [`load_examples_with`].
pub fn load_examples(
    path: &Path,
    format: DataFormat,
    tok: &Tokenizer,
    seq_len: usize,
) -> Result<(Vec<Example>, LoadReport), DataError> {
    load_examples_with(path, format, tok, seq_len, &LoadOptions::default())
}

/// Reads `path` as JSONL in `format`, one line at a time, and tokenizes each line into an
/// [`Example`] whose last token is a supervised EOS.
///
/// Samples longer than `seq_len` keep their start: when the cut falls inside supervised tokens,
/// the last kept token is replaced by a supervised EOS; when it falls in unsupervised tokens, the
/// sample ends after its last supervised token (an EOS for conversations); a sample left with
/// no supervised token is dropped. An empty result is [`DataError::EmptyDataset`] naming the step
/// that removed everything.
pub fn load_examples_with(
    path: &Path,
    format: DataFormat,
    tok: &Tokenizer,
    seq_len: usize,
    opts: &LoadOptions,
) -> Result<(Vec<Example>, LoadReport), DataError> {
    let (kept, report) = load_examples_and(path, format, tok, seq_len, opts, |_| Ok(()))?;
    Ok((kept.into_iter().map(|(ex, ())| ex).collect(), report))
}

/// [`load_examples_with`], also handing back `also(record)` beside each kept example: what else
/// is made of the same line (the same record rendered for another tokenizer). An error of
/// `also` is an error of the line.
pub(crate) fn load_examples_and<T>(
    path: &Path,
    format: DataFormat,
    tok: &Tokenizer,
    seq_len: usize,
    opts: &LoadOptions,
    mut also: impl FnMut(&Record) -> Result<T, LineProblem>,
) -> Result<(Vec<(Example, T)>, LoadReport), DataError> {
    if seq_len < 2 {
        return Err(DataError::Argument(format!("seq_len must be at least 2, got {seq_len}")));
    }
    let renderer = Renderer::new(tok)?;
    if format.needs_chat_template() && renderer.template().is_none() {
        return Err(DataError::NoChatTemplate { format });
    }
    let eos = tok.eos_id().ok_or(DataError::NoEos)?;
    let io_err = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut lines = LineReader::new(BufReader::with_capacity(1 << 16, file), opts.max_line_bytes);

    let mut examples = Vec::new();
    let mut report = LoadReport::default();
    let mut ignored = BTreeSet::new();
    let mut pending_empty: Option<usize> = None;
    let mut n_rows = 0usize;
    while let Some((line, raw)) = lines.next_line().map_err(io_err)? {
        let bytes = match raw {
            RawLine::TooLong if opts.skip_bad_rows => {
                n_rows += 1;
                skip(&mut report, DataError::LineTooLong { path: path.into(), line, cap: opts.max_line_bytes });
                continue;
            }
            RawLine::TooLong => {
                return Err(DataError::LineTooLong { path: path.into(), line, cap: opts.max_line_bytes })
            }
            RawLine::Bytes(b) => b,
        };
        if bytes.trim_ascii().is_empty() {
            pending_empty.get_or_insert(line);
            continue;
        }
        if let Some(empty) = pending_empty.take() {
            if !opts.skip_bad_rows {
                return Err(line_error(path, empty, None, LineProblem::EmptyLine));
            }
        }
        n_rows += 1;
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| (Some(e.valid_up_to() + 1), LineProblem::BadUtf8))
            .and_then(|text| parse_line(text, format, &mut ignored))
            .and_then(|record| {
                let ex = renderer.example(&record).map_err(|p| (None, p))?;
                Ok((ex, also(&record).map_err(|p| (None, p))?))
            });
        let (mut ex, other) = match parsed {
            Ok(ex) => ex,
            Err((column, problem)) => {
                let err = line_error(path, line, column, problem);
                if !opts.skip_bad_rows {
                    return Err(err);
                }
                skip(&mut report, err);
                continue;
            }
        };
        match truncate(&mut ex, seq_len, eos) {
            Cut::Kept => {}
            Cut::Truncated => report.n_truncated += 1,
            Cut::Dropped => {
                report.n_truncated += 1;
                report.n_dropped += 1;
                continue;
            }
        }
        report.n_tokens += ex.ids.len();
        report.n_supervised_tokens += ex.supervised.iter().filter(|&&s| s).count();
        examples.push((ex, other));
    }
    report.n_examples = examples.len();
    report.ignored_fields = ignored.into_iter().collect();
    if examples.is_empty() {
        let after = if n_rows == 0 {
            "in the file (it has no JSON lines)".to_string()
        } else if report.n_skipped == n_rows {
            format!("after skipping {} malformed lines (the first: {})", report.n_skipped, report.skipped[0])
        } else {
            format!(
                "after truncation to seq_len = {seq_len}: the supervised tokens of all {} samples lie \
                 beyond it; raise seq_len or shorten the prompts",
                report.n_dropped
            )
        };
        return Err(DataError::EmptyDataset { path: path.into(), after });
    }
    Ok((examples, report))
}

fn line_error(path: &Path, line: usize, column: Option<usize>, problem: LineProblem) -> DataError {
    DataError::Line { path: path.into(), line, column, problem }
}

fn skip(report: &mut LoadReport, err: DataError) {
    report.n_skipped += 1;
    if report.skipped.len() < MAX_SKIPPED_MESSAGES {
        report.skipped.push(err.to_string());
    }
}

/// What [`truncate`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    Kept,
    Truncated,
    Dropped,
}

/// Cuts `ex` to at most `seq_len` tokens, keeping its start and ending it with a supervised EOS.
pub(crate) fn truncate(ex: &mut Example, seq_len: usize, eos: u32) -> Cut {
    if ex.ids.len() <= seq_len {
        return Cut::Kept;
    }
    let last = seq_len - 1;
    if ex.supervised[last] && ex.supervised[seq_len] {
        // The cut is inside a supervised span: the sample stops there.
        ex.ids.truncate(seq_len);
        ex.supervised.truncate(seq_len);
        ex.ids[last] = eos;
        return Cut::Truncated;
    }
    // The cut is in unsupervised tokens (or right before a supervised span): end after the last
    // supervised token that fits.
    let Some(end) = ex.supervised[..seq_len].iter().rposition(|&s| s) else {
        return Cut::Dropped;
    };
    ex.ids.truncate(end + 1);
    ex.supervised.truncate(end + 1);
    if ex.ids[end] != eos {
        if end + 1 < seq_len {
            ex.ids.push(eos);
            ex.supervised.push(true);
        } else {
            ex.ids[end] = eos;
        }
    }
    Cut::Truncated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(sup: &str) -> Example {
        let supervised: Vec<bool> = sup.chars().map(|c| c == 's').collect();
        Example { ids: (10..10 + supervised.len() as u32).collect(), supervised }
    }

    #[test]
    fn truncation_keeps_the_start_and_ends_with_supervised_eos() {
        // Cut inside the completion: the last kept token becomes EOS.
        let mut e = ex("pppsss");
        assert_eq!(truncate(&mut e, 5, 2), Cut::Truncated);
        assert_eq!((e.ids, e.supervised), (vec![10, 11, 12, 13, 2], vec![false, false, false, true, true]));
        // Cut right before the completion: nothing supervised fits.
        let mut e = ex("pppsss");
        assert_eq!(truncate(&mut e, 3, 2), Cut::Dropped);
        // Cut in a later unsupervised turn: end after the earlier supervised span, plus EOS.
        let mut e = ex("pssppps");
        assert_eq!(truncate(&mut e, 5, 2), Cut::Truncated);
        assert_eq!((e.ids, e.supervised), (vec![10, 11, 12, 2], vec![false, true, true, true]));
        let mut e = ex("pss");
        assert_eq!(truncate(&mut e, 3, 2), Cut::Kept);
    }
}
