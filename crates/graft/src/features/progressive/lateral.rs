//! The lateral adapters and linear heads that columns copying a backbone's own layers share
//! (encoder blocks in [`super::encoder`], CNN units in [`super::cnn`]): an adapter
//! `U·gelu(V·h)` from each earlier column into each level after the first and into the head,
//! with `U` starting at zero so a new column starts as a plain copy of the backbone, and a
//! linear head on the pooled output. Creation, the forward sum and the saved names live here
//! once.

use super::super::head::uniform_init;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

/// A lateral adapter from one earlier column: `U·gelu(V·h)`, `V` `[rank, width]`, `U`
/// `[width, rank]`.
#[derive(Debug, Clone)]
pub(super) struct Lateral {
    pub(super) v: Tensor,
    pub(super) u: Tensor,
}

impl Lateral {
    /// `x` through the adapter: rows `[..., width]`, or a feature map `[N, width, H, W]`, on
    /// which it acts per pixel over the channels (a pair of 1x1 convolutions).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 4 {
            let channels_last = x.permute((0, 2, 3, 1))?;
            return Ok(self.over_last_dim(&channels_last)?.permute((0, 3, 1, 2))?.contiguous()?);
        }
        self.over_last_dim(x)
    }

    /// The adapter applied along the last dimension of `x`.
    fn over_last_dim(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let rows = x.contiguous()?.reshape(((), d))?;
        let inner = rows.matmul(&self.v.t()?)?.gelu_erf()?;
        Ok(inner.matmul(&self.u.t()?)?.reshape(dims)?)
    }
}

/// Where a column's adapters and head sit: column `k` of the network, `levels` levels (the last
/// feeds the head), `width(level)` wide at each level, a head of `n_labels` classes.
pub(super) struct Shape<'a> {
    pub(super) k: usize,
    pub(super) levels: usize,
    pub(super) width: &'a dyn Fn(usize) -> usize,
    pub(super) n_labels: usize,
}

/// A column's adapters (`laterals[level][j]`: into `level`, from column `j`; level 0 has none,
/// the last level is the head's input) and its linear head.
#[derive(Debug, Clone)]
pub(super) struct LateralHead {
    pub(super) laterals: Vec<Vec<Lateral>>,
    pub(super) head_w: Tensor,
    pub(super) head_b: Tensor,
}

impl LateralHead {
    /// Fresh adapters of inner width `rank` and a head in `shape`: `V` uniform in ±1/√width,
    /// `U = 0`, the head as PyTorch's `nn.Linear` starts, drawn from `rng`. Every tensor is a
    /// variable, appended to `vars` under its saved name.
    pub(super) fn fresh(
        shape: &Shape,
        rank: usize,
        (dtype, device): (DType, &Device),
        rng: &mut ChaCha8Rng,
        vars: &mut Vec<(String, Var)>,
    ) -> Result<Self> {
        let &Shape { k, levels, width, n_labels } = shape;
        let mut var = |name: String, t: Tensor| -> Result<Tensor> {
            let v = Var::from_tensor(&t.to_dtype(dtype)?)?;
            let t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(t)
        };
        let mut laterals = Vec::with_capacity(levels);
        for level in 0..levels {
            let mut from = Vec::new();
            if level > 0 {
                let dim = width(level);
                for j in 0..k {
                    let v = var(
                        format!("columns.{k}.lateral.{level}.{j}.v"),
                        uniform_init(&[rank, dim], dim, rng, device)?,
                    )?;
                    let u =
                        var(format!("columns.{k}.lateral.{level}.{j}.u"), Tensor::zeros((dim, rank), dtype, device)?)?;
                    from.push(Lateral { v, u });
                }
            }
            laterals.push(from);
        }
        let dim = width(levels - 1);
        let head_w = var(format!("columns.{k}.head.weight"), uniform_init(&[n_labels, dim], dim, rng, device)?)?;
        let head_b = var(format!("columns.{k}.head.bias"), uniform_init(&[n_labels], dim, rng, device)?)?;
        Ok(Self { laterals, head_w, head_b })
    }

    /// A copy whose tensors are detached from training.
    pub(super) fn detached(&self) -> Self {
        let laterals = self
            .laterals
            .iter()
            .map(|ls| ls.iter().map(|l| Lateral { v: l.v.detach(), u: l.u.detach() }).collect())
            .collect();
        Self { laterals, head_w: self.head_w.detach(), head_b: self.head_b.detach() }
    }

    /// `x` plus every earlier column `j`'s output `outputs[j][source]` through this column's
    /// adapter into `level`.
    pub(super) fn add_laterals(
        &self,
        mut x: Tensor,
        outputs: &[Vec<Tensor>],
        level: usize,
        source: usize,
    ) -> Result<Tensor> {
        for (lat, out) in self.laterals[level].iter().zip(outputs) {
            x = (x + lat.forward(&out[source])?)?;
        }
        Ok(x)
    }

    /// The head's logits `[n, labels]` of the pooled input `z` `[n, width]`.
    pub(super) fn logits(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.matmul(&self.head_w.t()?)?.broadcast_add(&self.head_b)?)
    }

    /// Parameters of the adapters and the head.
    pub(super) fn params(&self) -> usize {
        let lats: usize = self.laterals.iter().flatten().map(|l| l.v.elem_count() + l.u.elem_count()).sum();
        lats + self.head_w.elem_count() + self.head_b.elem_count()
    }

    /// Appends column `k`'s tensors under their saved names: `columns.{k}.lateral.{level}.{j}.{v,u}`
    /// and `columns.{k}.head.{weight,bias}`.
    pub(super) fn save_into(&self, k: usize, map: &mut Vec<(String, Tensor)>) {
        for (level, from) in self.laterals.iter().enumerate() {
            for (j, lat) in from.iter().enumerate() {
                map.push((format!("columns.{k}.lateral.{level}.{j}.v"), lat.v.detach()));
                map.push((format!("columns.{k}.lateral.{level}.{j}.u"), lat.u.detach()));
            }
        }
        map.push((format!("columns.{k}.head.weight"), self.head_w.detach()));
        map.push((format!("columns.{k}.head.bias"), self.head_b.detach()));
    }

    /// Reads what [`Self::save_into`] wrote for the column of `shape` through `take` (which
    /// removes a named tensor or fails naming it), checking every shape; `bad` makes the error
    /// that names the file.
    pub(super) fn load(
        shape: &Shape,
        take: &mut dyn FnMut(&str) -> Result<Tensor>,
        bad: &dyn Fn(String) -> GraftError,
    ) -> Result<Self> {
        let &Shape { k, levels, width, n_labels } = shape;
        let mut laterals = Vec::with_capacity(levels);
        for level in 0..levels {
            let from = if level == 0 { 0 } else { k };
            let mut lats = Vec::with_capacity(from);
            for j in 0..from {
                let v = take(&format!("columns.{k}.lateral.{level}.{j}.v"))?;
                let u = take(&format!("columns.{k}.lateral.{level}.{j}.u"))?;
                if v.rank() != 2 || v.dim(1)? != width(level) || u.dims() != [width(level), v.dim(0)?] {
                    return Err(bad(format!(
                        "lateral {level}.{j} of column {k} has shapes {:?} and {:?}",
                        v.dims(),
                        u.dims()
                    )));
                }
                lats.push(Lateral { v, u });
            }
            laterals.push(lats);
        }
        let (head_w, head_b) = (take(&format!("columns.{k}.head.weight"))?, take(&format!("columns.{k}.head.bias"))?);
        if head_w.dims() != [n_labels, width(levels - 1)] || head_b.dims() != [n_labels] {
            return Err(bad(format!("the head of column {k} does not fit its {n_labels} labels")));
        }
        Ok(Self { laterals, head_w, head_b })
    }
}
