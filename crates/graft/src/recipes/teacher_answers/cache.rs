//! The answers file as a resumable cache: a sidecar `<out>.meta.json` records digests of what
//! decides the answers (teacher files, adapter, data file, generation settings); a file whose
//! sidecar matches is continued after its last complete line, one that does not is refused with
//! what changed.

use super::AnswerSettings;
use crate::assets::cache::hash_file;
use crate::assets::ModelSource;
use crate::data::DataFormat;
use crate::io::adapter::{locate_adapter, AdapterLocation};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What decides the answers in a file, written to `<out>.meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// The answering model.
    pub teacher: TeacherPrint,
    /// The file answered.
    pub data: DataPrint,
    /// How answers are generated.
    pub settings: AnswerSettings,
}

/// The teacher's identity: its files' contents and how they are loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherPrint {
    /// The model as given (for reading; not compared).
    pub model: String,
    /// sha256 over the model's files (a GGUF file, or every file of a Hugging Face folder).
    pub sha256: String,
    /// Activation and dense-weight precision (`f32`, `bf16`, ...).
    pub dtype: String,
    /// `dense` or `quantized` projections.
    pub weights: String,
    /// The adapter as given, if any (for reading; not compared).
    pub adapter: Option<String>,
    /// sha256 over the adapter's files, if any.
    pub adapter_sha256: Option<String>,
}

/// The answered data file's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPrint {
    /// The file as given (for reading; not compared).
    pub path: String,
    /// Its format.
    pub format: DataFormat,
    /// sha256 of its bytes.
    pub sha256: String,
}

/// sha256 over the files that make up `path`: the file itself, or every file directly inside a
/// folder, by name (digests of name and content, so a renamed file changes it too).
pub(crate) fn digest_path(path: &Path) -> Result<String> {
    if path.is_file() {
        return Ok(hash_file(path)?.0);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| GraftError::io(path, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| GraftError::io(path, e)))
        .collect::<Result<Vec<_>>>()?;
    files.retain(|p| p.is_file());
    files.sort();
    let mut all = Sha256::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        all.update(format!("{name} {}\n", hash_file(&file)?.0).as_bytes());
    }
    Ok(hex::encode(all.finalize()))
}

/// The teacher part of a fingerprint.
pub(crate) fn teacher_print(
    model_name: &str,
    source: &ModelSource,
    dtype: &str,
    weights: &str,
    adapter: Option<&Path>,
) -> Result<TeacherPrint> {
    let model_path = match source {
        ModelSource::Gguf(p) | ModelSource::HfFolder(p) => p,
    };
    let adapter_sha256 = match adapter.map(locate_adapter).transpose()? {
        Some(AdapterLocation::Peft(p) | AdapterLocation::GgufLora(p)) => Some(digest_path(&p)?),
        None => None,
    };
    Ok(TeacherPrint {
        model: model_name.to_string(),
        sha256: digest_path(model_path)?,
        dtype: dtype.to_string(),
        weights: weights.to_string(),
        adapter: adapter.map(|p| p.display().to_string()),
        adapter_sha256,
    })
}

/// What differs between the fingerprint a file was written with and the current one, as
/// readable reasons (empty when they match).
pub(crate) fn differences(saved: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&saved.teacher, &now.teacher);
    if a.sha256 != b.sha256 {
        out.push(format!("the teacher model changed ({} before, {} now: other files)", a.model, b.model));
    }
    if a.dtype != b.dtype || a.weights != b.weights {
        out.push(format!(
            "the teacher is loaded differently ({} {} before, {} {} now)",
            a.dtype, a.weights, b.dtype, b.weights
        ));
    }
    if a.adapter_sha256 != b.adapter_sha256 {
        let name = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        out.push(format!("the teacher's adapter changed ({} before, {} now)", name(&a.adapter), name(&b.adapter)));
    }
    if saved.data.sha256 != now.data.sha256 {
        out.push(format!("the data file changed ({} before, {} now: other contents)", saved.data.path, now.data.path));
    }
    if saved.data.format != now.data.format {
        out.push(format!("the data format changed ({} before, {} now)", saved.data.format, now.data.format));
    }
    let (a, b) = (serde_json::to_value(&saved.settings), serde_json::to_value(&now.settings));
    if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) {
        let changed: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} {v} → {}", b[k.as_str()]))
            .collect();
        if !changed.is_empty() {
            out.push(format!("the generation settings changed ({})", changed.join(", ")));
        }
    }
    out
}

/// The sidecar of an answers file: `<out>.meta.json`.
pub fn meta_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".meta.json");
    out.with_file_name(name)
}

/// Makes `out` ready for appending answers made under `print` and returns how many complete
/// records it already holds: 0 for a new file (the sidecar is written first); for an existing
/// one whose sidecar matches, its complete lines (a torn last line is cut off). An existing file
/// without a sidecar, or with one that differs, is refused with the reason.
pub(crate) fn prepare(out: &Path, print: &Fingerprint, n_records: usize) -> Result<usize> {
    let meta = meta_path(out);
    if !out.exists() {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
        }
        crate::io::write_atomic(&meta, &serde_json::to_string_pretty(print)?)?;
        std::fs::write(out, b"").map_err(|e| GraftError::io(out, e))?;
        return Ok(0);
    }
    let refuse = |why: String| {
        GraftError::Input(format!(
            "{} holds teacher answers that cannot be continued: {why}; delete it and {} to start over, or \
             write to another file",
            out.display(),
            meta.display()
        ))
    };
    let text = match std::fs::read_to_string(&meta) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!("its record {} is missing", meta.display())))
        }
        Err(e) => return Err(GraftError::io(&meta, e)),
    };
    let saved: Fingerprint = serde_json::from_str(&text)
        .map_err(|e| refuse(format!("its record {} is unreadable ({e})", meta.display())))?;
    let changed = differences(&saved, print);
    if !changed.is_empty() {
        return Err(refuse(changed.join("; ")));
    }
    let bytes = std::fs::read(out).map_err(|e| GraftError::io(out, e))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let done = bytes[..complete].iter().filter(|&&b| b == b'\n').count();
    if done > n_records {
        return Err(refuse(format!("it has {done} lines but the data file has {n_records} records")));
    }
    if complete < bytes.len() {
        let file = std::fs::OpenOptions::new().write(true).open(out).map_err(|e| GraftError::io(out, e))?;
        file.set_len(complete as u64).map_err(|e| GraftError::io(out, e))?;
        file.sync_all().map_err(|e| GraftError::io(out, e))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print() -> Fingerprint {
        Fingerprint {
            teacher: TeacherPrint {
                model: "teacher.gguf".into(),
                sha256: "aa".into(),
                dtype: "f32".into(),
                weights: "dense".into(),
                adapter: None,
                adapter_sha256: None,
            },
            data: DataPrint { path: "d.jsonl".into(), format: DataFormat::Messages, sha256: "bb".into() },
            settings: AnswerSettings::default(),
        }
    }

    #[test]
    fn differences_name_what_changed() {
        let a = print();
        assert!(differences(&a, &a).is_empty());
        let mut moved = a.clone();
        moved.data.path = "elsewhere.jsonl".into();
        moved.teacher.model = "copy.gguf".into();
        assert!(differences(&a, &moved).is_empty(), "paths alone are not compared");
        let mut b = a.clone();
        b.teacher.sha256 = "cc".into();
        b.teacher.adapter = Some("run".into());
        b.teacher.adapter_sha256 = Some("dd".into());
        b.teacher.dtype = "bf16".into();
        b.data.sha256 = "ee".into();
        b.settings.temperature = 0.5;
        b.settings.max_new_tokens = 9;
        let d = differences(&a, &b).join("; ");
        for want in [
            "the teacher model changed",
            "loaded differently (f32 dense before, bf16 dense now)",
            "adapter changed (none before, run now)",
            "the data file changed",
            "settings changed (max_new_tokens 128 → 9, temperature 0.0 → 0.5)",
        ] {
            assert!(d.contains(want), "{want} not in {d}");
        }
    }

    #[test]
    fn a_torn_line_is_cut_and_a_foreign_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.jsonl");
        assert_eq!(prepare(&out, &print(), 3).unwrap(), 0);
        std::fs::write(&out, "{\"x\":1}\n{\"x\":2}\n{\"x\"").unwrap();
        assert_eq!(prepare(&out, &print(), 3).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"x\":1}\n{\"x\":2}\n");
        let e = prepare(&out, &print(), 1).unwrap_err().to_string();
        assert!(e.contains("2 lines but the data file has 1 records"), "{e}");
        std::fs::remove_file(meta_path(&out)).unwrap();
        let e = prepare(&out, &print(), 3).unwrap_err().to_string();
        assert!(e.contains("a.jsonl.meta.json is missing"), "{e}");
    }
}
