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

    write_files(dir, ["compare.md", "compare.json", "report.html"], [&markdown, &json, &html])
}

/// Writes the Markdown, JSON and HTML renderings `texts` into `dir` (created if missing) under
/// `names`, each atomically, then syncs the folder.
pub(super) fn write_files(dir: &Path, names: [&str; 3], texts: [&str; 3]) -> Result<ReportFiles> {
    std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    let files = ReportFiles { markdown: dir.join(names[0]), json: dir.join(names[1]), html: dir.join(names[2]) };
    for (path, text) in [&files.markdown, &files.json, &files.html].into_iter().zip(texts) {
        write_atomic(path, text)?;
    }
    crate::io::sync_dir(dir).map_err(|e| GraftError::io(dir, e))?;
    Ok(files)
}
