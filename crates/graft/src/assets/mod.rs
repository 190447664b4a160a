//! Named pretrained models and datasets: where they come from, where they are cached, and how
//! they are verified.

use std::path::PathBuf;

/// Why an asset could not be found or fetched.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// No asset is registered under this name.
    #[error("unknown asset `{name}`: run `graft fetch --list` to see the names")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The asset is not in the cache and fetching was not allowed.
    #[error("asset `{name}` is not in the cache at {path} and --offline was given: run `graft fetch {name}` first")]
    Offline {
        /// The asset name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
}

use std::path::Path;

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

/// Turns a `--model` argument (an asset name, a `.gguf` file or a Hugging Face folder) into the
/// files to load, fetching a named asset into the cache unless `offline`.
pub fn resolve_model(arg: &str, offline: bool) -> crate::Result<ModelSource> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(ModelSource::HfFolder(path.to_path_buf()));
    }
    if path.is_file() {
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    if arg.ends_with(".gguf") || arg.contains(std::path::MAIN_SEPARATOR) {
        return Err(crate::GraftError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    match arg {
        DEFAULT_MODEL => {
            let file = cache_dir().join("models").join(arg).join("SmolLM2-135M-Instruct.Q4_1.gguf");
            if file.is_file() {
                Ok(ModelSource::Gguf(file))
            } else {
                let _ = offline;
                Err(AssetError::Offline { name: arg.into(), path: file }.into())
            }
        }
        _ => Err(AssetError::Unknown { name: arg.into() }.into()),
    }
}
