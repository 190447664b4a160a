//! A smaller student built from a model's own blocks (the DistilBERT recipe): keep some decoder
//! blocks (`model.keep_layers`), initialise them from the model's weights, renumber them
//! `0..n`, and remember which blocks they were.
//!
//! [`KeepLayers`] is the config value, [`KeptBlocks`] the weight source that shows a model's
//! kept blocks as a model of their own (so the ordinary loader builds the student), and
//! [`StudentLineage`] the record of the choice that travels with the model into `summary.json`
//! and every export (`config.json` key [`StudentLineage::JSON_KEY`], GGUF keys under
//! `graft.student.`).

use super::config::KeyNames;
use super::weights::{WeightFormat, WeightSource};
use crate::models::linear::BaseWeight;
use crate::{GraftError, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which decoder blocks a student keeps: `keep_layers = [0, 2, 4]` or
/// `keep_layers = { every = 2, offset = 0 }` in a training config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of block indices such as [0, 2, 4], or a table such as { every = 2, offset = 0 }"
)]
pub enum KeepLayers {
    /// These blocks, by index in the loaded model, strictly increasing.
    List(Vec<usize>),
    /// Blocks `offset`, `offset + every`, `offset + 2·every`, … up to the last block.
    Every(EveryNth),
}

/// `{ every = N, offset = K }`: every `N`-th block, starting at block `K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EveryNth {
    /// The step between kept blocks (at least 1; 2 halves the depth).
    pub every: usize,
    /// The first kept block. Default 0.
    #[serde(default)]
    pub offset: usize,
}

/// The config key, named in every error about it.
const KEY: &str = "model.keep_layers";

fn bad(why: String) -> GraftError {
    GraftError::Input(format!("config key `{KEY}`: {why}"))
}

impl KeepLayers {
    /// Checks what can be checked without the model: a non-empty list of strictly increasing
    /// indices, or a step of at least 1.
    pub fn check(&self) -> Result<()> {
        match self {
            KeepLayers::List(v) if v.is_empty() => Err(bad("is empty: name at least one block to keep".into())),
            KeepLayers::List(v) => match v.windows(2).find(|w| w[0] >= w[1]) {
                Some(w) => Err(bad(format!(
                    "block indices must be strictly increasing without repeats, found {} before {} in {v:?}",
                    w[0], w[1]
                ))),
                None => Ok(()),
            },
            KeepLayers::Every(e) if e.every == 0 => Err(bad("`every` must be at least 1, got 0".into())),
            KeepLayers::Every(_) => Ok(()),
        }
    }

    /// The kept blocks of a model with `n_blocks` blocks, ascending; errors name the key and the
    /// model's block count.
    pub fn resolve(&self, n_blocks: usize) -> Result<Vec<usize>> {
        self.check()?;
        let kept: Vec<usize> = match self {
            KeepLayers::List(v) => {
                if let Some(&i) = v.iter().find(|&&i| i >= n_blocks) {
                    return Err(bad(format!(
                        "block {i} is out of range: the model has {n_blocks} blocks (0 to {})",
                        n_blocks.saturating_sub(1)
                    )));
                }
                v.clone()
            }
            KeepLayers::Every(e) => (e.offset..n_blocks).step_by(e.every).collect(),
        };
        if kept.is_empty() {
            return Err(bad(format!("keeps no block: `offset` must be below the model's {n_blocks} blocks")));
        }
        Ok(kept)
    }
}

/// Which blocks of which model a student was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentLineage {
    /// Blocks of the model the student was built from (the teacher).
    pub teacher_num_hidden_layers: usize,
    /// The teacher's blocks the student's blocks `0..n` were initialised from, in order.
    pub kept_layers: Vec<usize>,
}

impl StudentLineage {
    /// The `config.json` key that holds the lineage of an exported student.
    pub const JSON_KEY: &'static str = "graft_student";
    /// GGUF metadata key of [`StudentLineage::teacher_num_hidden_layers`].
    pub const GGUF_TEACHER_BLOCKS: &'static str = "graft.student.teacher_block_count";
    /// GGUF metadata key of [`StudentLineage::kept_layers`].
    pub const GGUF_KEPT_BLOCKS: &'static str = "graft.student.kept_blocks";

    /// The lineage of keeping `kept` of a model with `n_blocks` blocks whose own lineage is
    /// `parent` (a student of a student still names the first teacher's blocks).
    pub fn keeping(parent: Option<&StudentLineage>, n_blocks: usize, kept: &[usize]) -> Self {
        match parent {
            Some(p) => Self {
                teacher_num_hidden_layers: p.teacher_num_hidden_layers,
                kept_layers: kept.iter().map(|&i| p.kept_layers[i]).collect(),
            },
            None => Self { teacher_num_hidden_layers: n_blocks, kept_layers: kept.to_vec() },
        }
    }

    /// Checks a lineage read from a file against the model's block count: one strictly
    /// increasing teacher block per student block, each below the teacher's count.
    fn check(&self, n_blocks: usize) -> std::result::Result<(), String> {
        let k = &self.kept_layers;
        if k.len() != n_blocks {
            return Err(format!("names {} kept blocks, but the model has {n_blocks}", k.len()));
        }
        if k.windows(2).any(|w| w[0] >= w[1]) || k.last().is_some_and(|&l| l >= self.teacher_num_hidden_layers) {
            return Err(format!(
                "kept blocks {k:?} must be strictly increasing and below the teacher's {} blocks",
                self.teacher_num_hidden_layers
            ));
        }
        Ok(())
    }

    /// The lineage stored under [`StudentLineage::JSON_KEY`] of the `config.json` at `path`
    /// (`value`, when the key is there), checked against `n_blocks`.
    pub fn from_json(path: &Path, value: Option<&serde_json::Value>, n_blocks: usize) -> Result<Option<Self>> {
        let Some(v) = value else { return Ok(None) };
        let fail = |why: String| GraftError::model(path, format!("`{}`: {why}", Self::JSON_KEY));
        let lineage: Self = serde_json::from_value(v.clone()).map_err(|e| fail(e.to_string()))?;
        lineage.check(n_blocks).map_err(fail)?;
        Ok(Some(lineage))
    }

    /// The lineage stored in GGUF metadata, if any, checked against `n_blocks`.
    pub fn from_gguf(gguf: &crate::io::gguf::GgufFile, n_blocks: usize) -> Result<Option<Self>> {
        let Some(kept) = gguf.metadata().get(Self::GGUF_KEPT_BLOCKS) else { return Ok(None) };
        let fail = |key: &str, why: String| GraftError::model(gguf.path(), format!("metadata `{key}`: {why}"));
        let items = match kept {
            Value::Array(items) => items,
            _ => return Err(fail(Self::GGUF_KEPT_BLOCKS, "must be an array of u32".into())),
        };
        let kept_layers = items
            .iter()
            .map(|v| match v {
                Value::U32(i) => Ok(*i as usize),
                _ => Err(fail(Self::GGUF_KEPT_BLOCKS, "must be an array of u32".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        let teacher = gguf.meta_u32(Self::GGUF_TEACHER_BLOCKS)? as usize;
        let lineage = Self { teacher_num_hidden_layers: teacher, kept_layers };
        lineage.check(n_blocks).map_err(|why| fail(Self::GGUF_KEPT_BLOCKS, why))?;
        Ok(Some(lineage))
    }

    /// The GGUF metadata entries that store this lineage.
    pub fn gguf_metadata(&self) -> Vec<(&'static str, Value)> {
        let kept = self.kept_layers.iter().map(|&i| Value::U32(i as u32)).collect();
        vec![
            (Self::GGUF_TEACHER_BLOCKS, Value::U32(self.teacher_num_hidden_layers as u32)),
            (Self::GGUF_KEPT_BLOCKS, Value::Array(kept)),
        ]
    }
}

/// A [`WeightSource`] showing blocks `kept` of `inner` as blocks `0..kept.len()`; every other
/// tensor (embeddings, final norm, LM head) is passed through.
pub struct KeptBlocks<'a> {
    inner: &'a dyn WeightSource,
    kept: &'a [usize],
}

impl<'a> KeptBlocks<'a> {
    /// The kept blocks of `inner` (indices checked by [`KeepLayers::resolve`]).
    pub fn new(inner: &'a dyn WeightSource, kept: &'a [usize]) -> Self {
        Self { inner, kept }
    }

    /// The name in `inner` of the student's tensor `hf`; `None` for a block the student lacks.
    fn inner_name(&self, hf: &str) -> Option<String> {
        let Some(rest) = hf.strip_prefix("model.layers.") else { return Some(hf.to_string()) };
        let (i, tail) = rest.split_once('.')?;
        let from = *self.kept.get(i.parse::<usize>().ok()?)?;
        Some(format!("model.layers.{from}.{tail}"))
    }

    fn name_or_err(&self, hf: &str) -> Result<String> {
        self.inner_name(hf).ok_or_else(|| GraftError::model(self.origin(), format!("the student has no tensor `{hf}`")))
    }
}

impl WeightSource for KeptBlocks<'_> {
    fn origin(&self) -> &Path {
        self.inner.origin()
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.inner_name(hf_name).is_some_and(|n| self.inner.contains(&n))
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.inner_name(hf_name).and_then(|n| self.inner.shape(&n))
    }

    fn stored_name(&self, hf_name: &str) -> String {
        self.inner_name(hf_name).map_or_else(|| hf_name.to_string(), |n| self.inner.stored_name(&n))
    }

    fn key_names(&self) -> KeyNames {
        self.inner.key_names()
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.inner.dense(&self.name_or_err(hf_name)?, dtype, device)
    }

    fn projection(&self, hf_name: &str, format: WeightFormat, dtype: DType, device: &Device) -> Result<BaseWeight> {
        self.inner.projection(&self.name_or_err(hf_name)?, format, dtype, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_value: &str) -> std::result::Result<KeepLayers, String> {
        #[derive(Deserialize)]
        struct T {
            k: KeepLayers,
        }
        toml::from_str::<T>(&format!("k = {toml_value}")).map(|t| t.k).map_err(|e| e.to_string())
    }

    #[test]
    fn both_forms_parse_and_resolve() {
        assert_eq!(parse("[0, 2, 4]").unwrap().resolve(30).unwrap(), vec![0, 2, 4]);
        let half = parse("{ every = 2 }").unwrap().resolve(30).unwrap();
        assert_eq!(half, (0..30).step_by(2).collect::<Vec<_>>());
        assert_eq!(half.len(), 15);
        assert_eq!(parse("{ every = 2, offset = 1 }").unwrap().resolve(30).unwrap()[..3], [1, 3, 5]);
        assert_eq!(parse("{ every = 10, offset = 9 }").unwrap().resolve(30).unwrap(), vec![9, 19, 29]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = |v: &str, n: usize| parse(v).unwrap().resolve(n).unwrap_err().to_string();
        for (v, n, want) in [
            ("[]", 30, "is empty"),
            ("[0, 2, 2]", 30, "found 2 before 2"),
            ("[4, 2]", 30, "found 4 before 2"),
            ("[0, 30]", 30, "block 30 is out of range: the model has 30 blocks (0 to 29)"),
            ("{ every = 0 }", 30, "`every` must be at least 1"),
            ("{ every = 2, offset = 30 }", 30, "keeps no block"),
        ] {
            let e = err(v, n);
            assert!(e.contains("`model.keep_layers`") && e.contains(want), "{v}: {e}");
        }
        for v in ["\"every:2\"", "{ step = 2 }", "[-1]", "3"] {
            assert!(parse(v).unwrap_err().contains("a list of block indices"), "{v}");
        }
    }

    #[test]
    fn lineage_composes_and_is_checked() {
        let first = StudentLineage::keeping(None, 30, &[0, 2, 4, 6]);
        let second = StudentLineage::keeping(Some(&first), 4, &[1, 3]);
        assert_eq!(second, StudentLineage { teacher_num_hidden_layers: 30, kept_layers: vec![2, 6] });
        assert!(second.check(2).is_ok());
        assert!(second.check(3).unwrap_err().contains("names 2 kept blocks"));
        let bad = StudentLineage { teacher_num_hidden_layers: 4, kept_layers: vec![2, 6] };
        assert!(bad.check(2).unwrap_err().contains("below the teacher's 4 blocks"));
    }
}
