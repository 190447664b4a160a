//! Writing the three renderings of a comparison into a folder, each file atomically.

use std::path::{Path, PathBuf};

use super::{html_report, markdown_table, CompareReport};
use crate::io::write_atomic;
use crate::{GraftError, Result};

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `compare.md`: the Markdown tables.
    pub markdown: PathBuf,
    /// `compare.json`: the report itself, pretty-printed, readable back into a [`CompareReport`].
    pub json: PathBuf,
    /// `report.html`: the self-contained page with tables and charts.
    pub html: PathBuf,
}

/// Writes `compare.md`, `compare.json` and `report.html` into `dir` (created if missing) and
/// returns their paths.
///
/// Everything is rendered before anything is written, so a chart that cannot be drawn leaves the
/// folder untouched. Each file goes to a temporary file in `dir`, is synced, made world-readable
/// and renamed over the old one, so a reader sees the old file or the new one, never a part.
/// JSON has no NaN or infinity: such values are written as `null`.
pub fn write_report(r: &CompareReport, dir: &Path) -> Result<ReportFiles> {
    let markdown = markdown_table(r);
    let mut json = serde_json::to_string_pretty(r)?;
    json.push('\n');
    let html = html_report(r)?;

    std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    let files =
        ReportFiles { markdown: dir.join("compare.md"), json: dir.join("compare.json"), html: dir.join("report.html") };
    write_atomic(&files.markdown, &markdown)?;
    write_atomic(&files.json, &json)?;
    write_atomic(&files.html, &html)?;
    crate::io::sync_dir(dir).map_err(|e| GraftError::io(dir, e))?;
    Ok(files)
}
