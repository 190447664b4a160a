//! Block expansion (LLaMA Pro): a deeper model grown from a model's own blocks
//! (`model.expand_blocks = N`). N new decoder blocks are inserted evenly between the `L` blocks
//! of the model, each a copy of the block before it with its attention output projection
//! (`o_proj`) and MLP down projection (`down_proj`) zeroed. A block adds its attention and MLP
//! outputs to the residual stream, and both are then exactly 0, so the grown model computes the
//! same function as the model it was grown from (bit for bit) until the new blocks train.
//!
//! [`BlockExpansion`] is the plan (where the new blocks go; also the record that travels into
//! `summary.json`), and [`ExpandedBlocks`] the weight source that shows a model's blocks with the
//! new ones inserted (built on [`KeptBlocks`], which maps each block to the block it copies), so
//! the ordinary loader builds the grown model.

use super::config::KeyNames;
use super::student::KeptBlocks;
use super::weights::{WeightFormat, WeightSource};
use crate::models::linear::BaseWeight;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The config key, named in every error about it.
pub const KEY: &str = "model.expand_blocks";

/// The projections a new block has zeroed: the two whose outputs join the residual stream.
const ZEROED: [&str; 2] = ["self_attn.o_proj.weight", "mlp.down_proj.weight"];

/// An input error about the config key [`KEY`].
pub(crate) fn bad(why: String) -> GraftError {
    GraftError::Input(format!("config key `{KEY}`: {why}"))
}

/// Where the new blocks of a grown model are: new block `k` (1-based, of `N`) follows original
/// block `⌊k·L/N⌋ − 1`, so the `L` blocks fall into `N` groups of `⌊L/N⌋` or `⌈L/N⌉` and each
/// group ends with its new block (LLaMA Pro's interleaving: when `N` divides `L`, one new block
/// after every `L/N`-th block, the last after the last block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockExpansion {
    /// Blocks of the model the grown one was built from.
    pub base_num_hidden_layers: usize,
    /// Indices of the new blocks in the grown model, ascending.
    pub new_layers: Vec<usize>,
}

impl BlockExpansion {
    /// Checks what can be checked without the model: at least one new block.
    pub fn check(n_new: usize) -> Result<()> {
        if n_new == 0 {
            return Err(bad("must be at least 1 (leave it out to keep the model's depth)".into()));
        }
        Ok(())
    }

    /// The plan for growing a model of `n_blocks` blocks by `n_new` blocks; more new blocks than
    /// the model has is refused (each new block copies a different original block).
    pub fn plan(n_blocks: usize, n_new: usize) -> Result<Self> {
        Self::check(n_new)?;
        if n_new > n_blocks {
            return Err(bad(format!(
                "{n_new} new blocks for a model of {n_blocks} blocks: at most one new block per original block \
                 (at most {n_blocks})"
            )));
        }
        let new_layers = (1..=n_new).map(|k| k * n_blocks / n_new + k - 1).collect();
        Ok(Self { base_num_hidden_layers: n_blocks, new_layers })
    }

    /// Blocks of the grown model.
    pub fn num_hidden_layers(&self) -> usize {
        self.base_num_hidden_layers + self.new_layers.len()
    }

    /// Whether block `i` of the grown model is new.
    pub fn is_new(&self, i: usize) -> bool {
        self.new_layers.binary_search(&i).is_ok()
    }

    /// For each block of the grown model, the original block it is (or copies).
    pub fn sources(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.num_hidden_layers());
        let mut original = 0;
        for i in 0..self.num_hidden_layers() {
            if self.is_new(i) {
                out.push(original - 1);
            } else {
                out.push(original);
                original += 1;
            }
        }
        out
    }

    /// Whether the Hugging Face tensor name `hf` is a weight of a new block.
    pub fn is_new_tensor(&self, hf: &str) -> bool {
        block_of(hf).is_some_and(|(i, _)| self.is_new(i))
    }
}

/// The block index and the rest of a name `model.layers.{i}.{rest}`.
fn block_of(hf: &str) -> Option<(usize, &str)> {
    let (i, rest) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// A [`WeightSource`] showing `inner`'s blocks with the new blocks of `plan` inserted: a new
/// block's tensors are those of the block before it, except `o_proj` and `down_proj`, which are
/// zeros (dense, whatever the requested format). Every other tensor is passed through.
pub struct ExpandedBlocks<'a> {
    blocks: KeptBlocks<'a>,
    plan: &'a BlockExpansion,
}

impl<'a> ExpandedBlocks<'a> {
    /// `inner` grown by `plan`; `sources` is [`BlockExpansion::sources`] of `plan`.
    pub fn new(inner: &'a dyn WeightSource, plan: &'a BlockExpansion, sources: &'a [usize]) -> Self {
        Self { blocks: KeptBlocks::new(inner, sources), plan }
    }

    /// Whether `hf` is a zeroed projection of a new block.
    fn zeroed(&self, hf: &str) -> bool {
        block_of(hf).is_some_and(|(i, rest)| self.plan.is_new(i) && ZEROED.contains(&rest))
    }

    fn zeros(&self, hf: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape =
            self.blocks.shape(hf).ok_or_else(|| GraftError::model(self.origin(), format!("no tensor `{hf}`")))?;
        Ok(Tensor::zeros(shape, dtype, device)?)
    }
}

impl WeightSource for ExpandedBlocks<'_> {
    fn origin(&self) -> &Path {
        self.blocks.origin()
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.blocks.contains(hf_name)
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.blocks.shape(hf_name)
    }

    fn stored_name(&self, hf_name: &str) -> String {
        self.blocks.stored_name(hf_name)
    }

    fn key_names(&self) -> KeyNames {
        self.blocks.key_names()
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        match self.zeroed(hf_name) {
            true => self.zeros(hf_name, dtype, device),
            false => self.blocks.dense(hf_name, dtype, device),
        }
    }

    fn projection(&self, hf_name: &str, format: WeightFormat, dtype: DType, device: &Device) -> Result<BaseWeight> {
        match self.zeroed(hf_name) {
            true => Ok(BaseWeight::Dense(self.zeros(hf_name, dtype, device)?)),
            false => self.blocks.projection(hf_name, format, dtype, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blocks_interleave_evenly() {
        // N divides L: one new block after every L/N-th block (LLaMA Pro).
        let p = BlockExpansion::plan(30, 2).unwrap();
        assert_eq!(p.new_layers, vec![15, 31]);
        let src = p.sources();
        assert_eq!(src.len(), 32);
        assert_eq!((src[14], src[15], src[16], src[30], src[31]), (14, 14, 15, 29, 29));
        assert_eq!(BlockExpansion::plan(30, 3).unwrap().new_layers, vec![10, 21, 32]);
        // N does not divide L: groups of 7 or 8 blocks, each ending with its new block.
        let p = BlockExpansion::plan(30, 4).unwrap();
        assert_eq!(p.new_layers, vec![7, 16, 24, 33]);
        assert_eq!(p.sources().iter().filter(|&&s| s == 6).count(), 2);
        // As many new blocks as blocks: every block is followed by its copy.
        let p = BlockExpansion::plan(3, 3).unwrap();
        assert_eq!((p.new_layers.clone(), p.sources()), (vec![1, 3, 5], vec![0, 0, 1, 1, 2, 2]));
        for (l, n) in [(30, 8), (30, 29), (7, 5), (1, 1)] {
            let p = BlockExpansion::plan(l, n).unwrap();
            let src = p.sources();
            assert_eq!(src.len(), l + n);
            assert_eq!(*p.new_layers.last().unwrap(), l + n - 1, "the last block is always followed by a new one");
            let originals: Vec<usize> = (0..l + n).filter(|&i| !p.is_new(i)).map(|i| src[i]).collect();
            assert_eq!(originals, (0..l).collect::<Vec<_>>(), "{l} {n}");
            assert!(p.new_layers.iter().all(|&i| src[i] == src[i - 1]), "a new block copies the block before it");
        }
    }

    #[test]
    fn tensors_of_new_blocks_are_named() {
        let p = BlockExpansion::plan(30, 2).unwrap();
        assert!(p.is_new_tensor("model.layers.15.mlp.up_proj.weight"));
        assert!(p.is_new_tensor("model.layers.31.input_layernorm.weight"));
        assert!(!p.is_new_tensor("model.layers.14.mlp.up_proj.weight"));
        assert!(!p.is_new_tensor("model.norm.weight"));
    }

    #[test]
    fn bad_counts_name_the_key() {
        let e = BlockExpansion::plan(30, 0).unwrap_err().to_string();
        assert!(e.contains("`model.expand_blocks`") && e.contains("at least 1"), "{e}");
        let e = BlockExpansion::plan(30, 31).unwrap_err().to_string();
        assert!(e.contains("`model.expand_blocks`") && e.contains("31 new blocks for a model of 30 blocks"), "{e}");
    }
}
