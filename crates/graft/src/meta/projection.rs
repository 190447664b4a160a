//! The trainable part of the metric-based learners: a residual one-hidden-layer MLP over frozen
//! embeddings, `f(x) = x + W₂ relu(W₁ x + b₁) + b₂`. `W₁, b₁` start as PyTorch's `nn.Linear`
//! (uniform in ±1/√fan_in), `W₂, b₂` at zero, so before training `f` is the identity and a
//! prototypical network on it is exactly the nearest-centroid baseline on the frozen features:
//! meta-training can only move away from the baseline when that lowers the episode loss.

use crate::features::head::uniform_init;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A residual MLP `x + W₂ relu(W₁ x + b₁) + b₂` of width `dim` with `hidden` units.
#[derive(Debug, Clone)]
pub struct Projection {
    vars: Vec<(String, Var)>,
}

impl Projection {
    /// A fresh projection (the identity map, see the module docs) in `dtype` on `device`, its
    /// first layer drawn from `seed`.
    pub fn new(dim: usize, hidden: usize, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        if dim == 0 || hidden == 0 {
            return Err(GraftError::Input(format!(
                "a projection needs dim ≥ 1 and hidden ≥ 1, got {dim} and {hidden}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w1 = uniform_init(&[hidden, dim], dim, &mut rng, device)?.to_dtype(dtype)?;
        let b1 = uniform_init(&[hidden], dim, &mut rng, device)?.to_dtype(dtype)?;
        let w2 = Tensor::zeros((dim, hidden), dtype, device)?;
        let b2 = Tensor::zeros(dim, dtype, device)?;
        let names = ["proj.layers.0.weight", "proj.layers.0.bias", "proj.layers.1.weight", "proj.layers.1.bias"];
        let vars = names
            .into_iter()
            .zip([w1, b1, w2, b2])
            .map(|(n, t)| Ok((n.to_string(), Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Ok(Self { vars })
    }

    /// Its variables by name (`proj.layers.{0,1}.{weight,bias}`), for the optimizer and checkpoints.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Trainable parameters.
    pub fn n_params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// `f(x)` for `x [n, dim]`, differentiable with respect to the variables.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t: Vec<Tensor> = self.vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
        Self::forward_with(&t, x)
    }

    /// `f(x)` with the weights `[W₁, b₁, W₂, b₂]` given as tensors (in the order of
    /// [`Self::vars`]): learners that adapt the projection per episode run it at weights other
    /// than the variables'.
    pub fn forward_with(weights: &[Tensor], x: &Tensor) -> Result<Tensor> {
        let [w1, b1, w2, b2] = weights else {
            return Err(GraftError::Input(format!("a projection has 4 weight tensors, got {}", weights.len())));
        };
        let h = x.matmul(&w1.t()?)?.broadcast_add(b1)?.relu()?;
        Ok((x + h.matmul(&w2.t()?)?.broadcast_add(b2)?)?)
    }

    /// `f(x)` detached from the graph (evaluation).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward(&x.detach())?.detach())
    }
}
