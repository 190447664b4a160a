//! BERT tensors from a Hugging Face folder's safetensors files, read through the validated
//! reader ([`crate::io::safetensors::open_safetensors`]) and addressed by their `BertModel` names.

use crate::io::safetensors::{open_safetensors, SafetensorsFile};
use crate::models::load::safetensors_files;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

/// Name prefixes under which checkpoints store the encoder: `BertModel` saves bare names
/// (`embeddings.word_embeddings.weight`), task heads such as `BertForMaskedLM` prefix `bert.`.
const PREFIXES: [&str; 2] = ["", "bert."];

/// The tensor every BERT checkpoint has, used to find the prefix.
const PROBE: &str = "embeddings.word_embeddings.weight";

/// The safetensors files of one checkpoint, with the prefix its names carry.
pub struct BertWeights {
    origin: PathBuf,
    files: Vec<SafetensorsFile>,
    prefix: &'static str,
}

impl BertWeights {
    /// Validates and maps every safetensors file of the folder `dir` (`model.safetensors`, or
    /// the shards listed in `model.safetensors.index.json`).
    pub fn open(dir: &Path) -> Result<Self> {
        let files = safetensors_files(dir)?.iter().map(open_safetensors).collect::<std::result::Result<Vec<_>, _>>()?;
        let has = |name: &str| files.iter().any(|f| f.info(name).is_some());
        let prefix = PREFIXES.into_iter().find(|p| has(&format!("{p}{PROBE}"))).ok_or_else(|| {
            GraftError::model(
                dir,
                format!(
                    "no `{PROBE}` (or `bert.{PROBE}`) tensor: not a BERT checkpoint, or one saved with \
                     old `gamma`/`beta` names (re-save it with transformers' `save_pretrained`)"
                ),
            )
        })?;
        Ok(Self { origin: dir.to_path_buf(), files, prefix })
    }

    /// The folder the tensors come from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Whether the checkpoint has tensor `name` (a `BertModel` name, without any prefix).
    pub fn contains(&self, name: &str) -> bool {
        let full = format!("{}{name}", self.prefix);
        self.files.iter().any(|f| f.info(&full).is_some())
    }

    /// The shape of tensor `name` (a `BertModel` name), read without its data; `None` when the
    /// checkpoint has no such tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shape_exact(&self.stored_name(name))
    }

    /// The shape of the tensor stored under exactly `full` (no prefix added: task-head tensors
    /// such as `cls.predictions.bias` sit beside the `bert.` ones); `None` when there is none.
    pub fn shape_exact(&self, full: &str) -> Option<&[usize]> {
        self.files.iter().find_map(|f| f.info(full)).map(|t| t.shape.as_slice())
    }

    /// The name tensor `name` has in the checkpoint (with its prefix).
    pub fn stored_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Tensor `name` as `dtype` on `device`, checked to have shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.get_exact(&self.stored_name(name), shape, dtype, device)
    }

    /// The tensor stored under exactly `full` (no prefix added), as `dtype` on `device`, checked
    /// to have shape `shape`.
    pub fn get_exact(&self, full: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let file = self.files.iter().find(|f| f.info(full).is_some()).ok_or_else(|| {
            GraftError::model(&self.origin, format!("tensor `{full}` is missing from the checkpoint"))
        })?;
        let t = file.tensor(full, device)?;
        if t.dims() != shape {
            return Err(GraftError::model(
                file.path(),
                format!("tensor `{full}` has shape {:?}, expected {shape:?} from config.json", t.dims()),
            ));
        }
        Ok(t.to_dtype(dtype)?)
    }
}
