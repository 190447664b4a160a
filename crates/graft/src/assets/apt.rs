//! Downloading Debian packages with `apt-get download` (no root needed once the package index
//! exists) and unpacking their filesystem tree with `dpkg-deb -x`.
//!
//! Both are the Debian system tools: graft reuses the system's apt sources, proxy and keyring
//! rather than parsing the archive itself. On systems without them, Debian-packaged assets
//! cannot be fetched; their files can still be placed in the cache by hand (see docs/assets.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tool::run_tool;
use super::AssetError;
use crate::{GraftError, Result};

/// What to tell the user when apt cannot find the package.
const INDEX_HINT: &str = "apt's package index is missing or lacks this version: run `sudo apt-get update` once \
     (apt-get download itself needs no root); without root, point APT_CONFIG at an apt.conf whose \
     Dir::State::Lists names an index you keep up to date";

/// Downloads `name=version` into `dir/deb`, unpacks it into `dir/tree` and returns the tree.
pub(crate) fn download(asset: &str, name: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    let deb_dir = dir.join("deb");
    std::fs::create_dir_all(&deb_dir).map_err(|e| GraftError::io(&deb_dir, e))?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "-q"]).arg(format!("{name}={version}")).current_dir(&deb_dir);
    run_tool(asset, cmd, "apt-get download", INDEX_HINT)?;
    let deb = find_deb(asset, &deb_dir, name)?;

    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).map_err(|e| GraftError::io(&tree, e))?;
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(&deb).arg(&tree);
    run_tool(asset, cmd, "dpkg-deb -x", "dpkg-deb (package dpkg) unpacks Debian packages; install it")?;
    Ok(tree)
}

/// Finds the `.deb` apt saved for `name` in `dir`.
fn find_deb(asset: &str, dir: &Path, name: &str) -> Result<PathBuf> {
    let prefix = format!("{name}_");
    let entries = std::fs::read_dir(dir).map_err(|e| GraftError::io(dir, e))?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".deb") {
            return Ok(entry.path());
        }
    }
    Err(AssetError::Download {
        name: asset.to_string(),
        command: format!("apt-get download {name}"),
        detail: format!("apt-get succeeded but no {prefix}*.deb is in {}", dir.display()),
        hint: INDEX_HINT.to_string(),
    }
    .into())
}
