//! Attaching a saved LoRA adapter to a loaded model, whichever file format holds it: the one
//! resolver behind every `--adapter` flag.

use crate::adapters::lora::LoraSet;
use crate::models::llama::Llama;
use crate::{GraftError, Result};
use std::path::{Path, PathBuf};

/// Where the adapter an `--adapter` path names is, and in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterLocation {
    /// A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`).
    Peft(PathBuf),
    /// A llama.cpp LoRA adapter GGUF file.
    GgufLora(PathBuf),
}

impl AdapterLocation {
    /// The folder or file that is read.
    pub fn path(&self) -> &Path {
        match self {
            AdapterLocation::Peft(p) | AdapterLocation::GgufLora(p) => p,
        }
    }
}

/// Finds the adapter `path` names, without reading it: a PEFT adapter folder (graft's
/// `RUN/adapter` or one saved by PEFT), a `graft train` run folder (its `adapter/`), or a file,
/// taken as a llama.cpp LoRA adapter GGUF (`graft export --format gguf-lora`).
pub fn locate_adapter(path: &Path) -> Result<AdapterLocation> {
    if path.is_file() {
        return Ok(AdapterLocation::GgufLora(path.to_path_buf()));
    }
    if !path.is_dir() {
        if let Some(tasks) = path.parent().and_then(task_adapters_in) {
            return Err(GraftError::Input(format!(
                "adapter {} does not exist: its folder holds one adapter per task of a multitask run, for {}",
                path.display(),
                tasks.join(", ")
            )));
        }
        return Err(GraftError::Input(format!(
            "adapter {} does not exist: pass a PEFT adapter folder, a `graft train` run folder or a GGUF LoRA file",
            path.display()
        )));
    }
    for dir in [path.to_path_buf(), path.join("adapter")] {
        if dir.join("adapter_config.json").is_file() {
            return Ok(AdapterLocation::Peft(dir));
        }
    }
    if let Some(tasks) = task_adapters_in(&path.join("adapters")) {
        return Err(GraftError::Input(format!(
            "{} is a multitask run with one adapter per task: pass the task's own, one of {}",
            path.display(),
            tasks.iter().map(|t| path.join("adapters").join(t).display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let hint = if path.join("model").join("config.json").is_file() {
        format!("; a full fine-tuning run has no adapter: pass {} as --model", path.join("model").display())
    } else {
        String::new()
    };
    Err(GraftError::model(
        path,
        format!(
            "not an adapter: adapter_config.json is missing there and in its adapter/ folder (give a PEFT adapter \
             folder, a `graft train` run folder or a GGUF LoRA file){hint}"
        ),
    ))
}

/// The tasks whose adapters a per-task multitask run saved in `dir` (folders holding a task tag),
/// sorted; `None` when there are none.
fn task_adapters_in(dir: &Path) -> Option<Vec<String>> {
    let mut tasks: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(crate::multitask::TASK_FILE).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tasks.sort();
    (!tasks.is_empty()).then_some(tasks)
}

/// Attaches the adapter at `path` ([`locate_adapter`]) to `model` without merging. Target
/// modules and shapes are checked against the model before anything is attached.
pub fn load_adapter(path: &Path, model: &mut Llama) -> Result<LoraSet> {
    match locate_adapter(path)? {
        AdapterLocation::Peft(dir) => crate::io::peft::load_lora(&dir, model),
        AdapterLocation::GgufLora(file) => crate::io::gguf_lora::load_gguf_lora(&file, model),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_stands_for_its_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("adapter")).unwrap();
        std::fs::write(run.join("adapter/adapter_config.json"), "{}").unwrap();
        assert_eq!(locate_adapter(&run).unwrap(), AdapterLocation::Peft(run.join("adapter")));
        assert_eq!(locate_adapter(&run.join("adapter")).unwrap(), AdapterLocation::Peft(run.join("adapter")));
        let file = dir.path().join("a.gguf");
        std::fs::write(&file, "").unwrap();
        assert_eq!(locate_adapter(&file).unwrap(), AdapterLocation::GgufLora(file));
        let full = dir.path().join("full");
        std::fs::create_dir_all(full.join("model")).unwrap();
        std::fs::write(full.join("model/config.json"), "{}").unwrap();
        let e = locate_adapter(&full).unwrap_err().to_string();
        assert!(e.contains("adapter_config.json is missing") && e.contains("as --model"), "{e}");
        assert!(locate_adapter(&dir.path().join("nope")).unwrap_err().to_string().contains("does not exist"));
    }
}
