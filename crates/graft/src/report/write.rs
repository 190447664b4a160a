//! Writing the three renderings of a comparison into a folder, each file atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{html_report, markdown_table, CompareReport};
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

/// Writes `text` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| GraftError::io(dir, e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| GraftError::io(path, e))?;
    // Temporary files are private (0600); a report is meant to be read by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| GraftError::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| GraftError::io(path, e))?;
    tmp.persist(path).map_err(|e| GraftError::io(path, e.error))?;
    Ok(())
}
