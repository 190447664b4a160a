//! Turning a `--model` argument into files: an asset name, a `.gguf` file or a Hugging Face
//! model folder.

use std::io::Read;
use std::path::Path;

use super::registry;
use super::spec::AssetKind;
use super::{ensure, AssetError, ModelSource};
use crate::{GraftError, Result};

/// What every "cannot use this as a model" error suggests instead.
const ACCEPTED: &str = "give a .gguf file, a Hugging Face model folder (with config.json) or a model asset name";

/// Turns a `--model` argument (an asset name, a `.gguf` file or a Hugging Face folder) into the
/// files to load, fetching a named asset into the cache unless `offline`.
pub fn resolve_model(arg: &str, offline: bool) -> Result<ModelSource> {
    let path = Path::new(arg);
    if path.is_dir() {
        return hf_folder(path);
    }
    if path.is_file() {
        return gguf_file(path);
    }
    if looks_like_path(arg) {
        let reason = format!("no such file or folder; {ACCEPTED} (assets: {})", registry::known_names());
        return Err(GraftError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, reason)));
    }
    let spec = registry::find(arg)?;
    if spec.kind != AssetKind::Model {
        return Err(AssetError::NotAModel { name: arg.to_string(), kind: spec.kind.as_str() }.into());
    }
    let main = ensure(arg, offline)?;
    Ok(match spec.main {
        Some(_) => ModelSource::Gguf(main),
        None => ModelSource::HfFolder(main),
    })
}

/// Turns a speech `--model` argument (a speech-model asset name such as `whisper-tiny-en`, or a
/// CTranslate2 Whisper folder) into its folder, fetching a named asset unless `offline`. The
/// folder's files are checked when it is opened.
pub fn resolve_speech_model(arg: &str, offline: bool) -> Result<std::path::PathBuf> {
    const SPEECH: &str = "give a CTranslate2 Whisper folder or a speech-model asset name";
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() || looks_like_path(arg) {
        let what = if path.is_file() { "a file, not a folder" } else { "no such folder" };
        return Err(GraftError::model(path, format!("{what}; {SPEECH} (assets: {})", speech_names())));
    }
    let spec = registry::find(arg)?;
    if spec.kind != AssetKind::SpeechModel {
        return Err(GraftError::Input(format!(
            "asset `{arg}` is a {}, not a speech model; {SPEECH} (assets: {})",
            spec.kind.as_str(),
            speech_names()
        )));
    }
    ensure(arg, offline)
}

/// The registered speech-model asset names, comma-separated.
fn speech_names() -> String {
    let names: Vec<&str> =
        registry::registry().iter().filter(|s| s.kind == AssetKind::SpeechModel).map(|s| s.name).collect();
    names.join(", ")
}

/// Accepts a folder only when it has the `config.json` every Hugging Face model folder carries.
fn hf_folder(dir: &Path) -> Result<ModelSource> {
    if dir.join("config.json").is_file() {
        Ok(ModelSource::HfFolder(dir.to_path_buf()))
    } else {
        Err(GraftError::model(
            dir,
            format!("folder has no config.json, so it is not a Hugging Face model folder; {ACCEPTED}"),
        ))
    }
}

/// Accepts a file named `*.gguf` (the GGUF reader reports what is wrong inside it) or any file
/// that starts with the GGUF magic.
fn gguf_file(file: &Path) -> Result<ModelSource> {
    if file.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Ok(ModelSource::Gguf(file.to_path_buf()));
    }
    let mut magic = [0u8; 4];
    let mut reader = std::fs::File::open(file).map_err(|e| GraftError::io(file, e))?;
    let n = reader.read(&mut magic).map_err(|e| GraftError::io(file, e))?;
    if n == 4 && &magic == b"GGUF" {
        return Ok(ModelSource::Gguf(file.to_path_buf()));
    }
    Err(GraftError::model(file, format!("not a GGUF file (it does not start with `GGUF`); {ACCEPTED}")))
}

/// True when `arg` is clearly meant as a path rather than an asset name.
fn looks_like_path(arg: &str) -> bool {
    arg.contains('/')
        || arg.contains(std::path::MAIN_SEPARATOR)
        || arg.starts_with('.')
        || arg.starts_with('~')
        || arg.to_ascii_lowercase().ends_with(".gguf")
}
