//! 2-D batch normalisation over `[N, C, H, W]`: running statistics in evaluation, the batch's
//! own statistics (biased variance, as PyTorch normalises with) in training. Once
//! [`BatchNorm2d::track_running_stats`] is on (training from scratch), each training-mode pass
//! also moves the running statistics towards the batch's, as PyTorch does with `momentum`:
//! `running ← (1 − m) · running + m · batch`, the variance unbiased. A pretrained network keeps
//! them fixed (frozen batch norm).

use candle_core::{Tensor, Var};

use crate::Result;

/// PyTorch's default batch-norm momentum: the weight of each batch in the running statistics.
pub const DEFAULT_MOMENTUM: f64 = 0.1;

/// Running statistics updated by training passes (in place, through variables that share the
/// storage of `running_mean` / `running_var`).
#[derive(Debug, Clone)]
struct Tracking {
    mean: Var,
    var: Var,
    momentum: f64,
}

/// One batch-norm layer's parameters and running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Per-channel scale `[C]`.
    pub weight: Tensor,
    /// Per-channel shift `[C]`.
    pub bias: Tensor,
    /// Running mean `[C]`, used in evaluation.
    pub running_mean: Tensor,
    /// Running (unbiased) variance `[C]`, used in evaluation.
    pub running_var: Tensor,
    /// Added to the variance before the square root.
    pub eps: f64,
    tracking: Option<Tracking>,
}

impl BatchNorm2d {
    /// A batch norm whose running statistics stay fixed until
    /// [`Self::track_running_stats`].
    pub fn new(weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, eps: f64) -> Self {
        Self { weight, bias, running_mean, running_var, eps, tracking: None }
    }

    /// From now on, every training-mode [`Self::forward`] moves the running statistics towards
    /// the batch's with weight `momentum`. Returns the two statistics as variables (mean, then
    /// variance) so that checkpoints can save and restore them; the trainer never updates them
    /// by gradient. Calling it again returns the same variables.
    pub fn track_running_stats(&mut self, momentum: f64) -> Result<[Var; 2]> {
        if !(momentum.is_finite() && momentum > 0.0 && momentum <= 1.0) {
            return Err(crate::GraftError::Input(format!(
                "batch-norm momentum {momentum}: expected a share above 0 and at most 1"
            )));
        }
        if self.tracking.is_none() {
            let mean = Var::from_tensor(&self.running_mean.copy()?)?;
            let var = Var::from_tensor(&self.running_var.copy()?)?;
            self.running_mean = mean.as_tensor().clone();
            self.running_var = var.as_tensor().clone();
            self.tracking = Some(Tracking { mean, var, momentum });
        }
        let t = self.tracking.as_ref().expect("set above");
        Ok([t.mean.clone(), t.var.clone()])
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.dims1().unwrap_or(0)
    }

    /// Normalises `x` `[N, C, H, W]`: with the running statistics when `train` is false, with
    /// the statistics of `x` itself over `N, H, W` when it is true.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            // Fixed statistics: one per-channel affine map, whose backward sums over rows.
            let scale = (&self.weight / (&self.running_var + self.eps)?.sqrt()?)?;
            let shift = (&self.bias - (&self.running_mean * &scale)?)?;
            return Ok(crate::ops::channel_affine(x, &scale, &shift)?);
        }
        let (y, stats) = crate::ops::batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
        if let Some(t) = &self.tracking {
            let (n, _, h, w) = x.dims4()?;
            let count = (n * h * w) as f64;
            let unbiased = (stats.var * (count / (count - 1.0).max(1.0)))?;
            let m = t.momentum;
            let blend = |running: &Tensor, batch: Tensor| -> Result<Tensor> {
                Ok(((running * (1.0 - m))? + (batch.to_dtype(running.dtype())? * m)?)?)
            };
            t.mean.set(&blend(t.mean.as_tensor(), stats.mean)?)?;
            t.var.set(&blend(t.var.as_tensor(), unbiased)?)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn eval_uses_running_statistics_and_train_the_batch() {
        let dev = Device::Cpu;
        let bn = BatchNorm2d::new(
            Tensor::new(&[2f32, 0.5], &dev).unwrap(),
            Tensor::new(&[1f32, -1.0], &dev).unwrap(),
            Tensor::new(&[10f32, 0.0], &dev).unwrap(),
            Tensor::new(&[4f32, 1.0], &dev).unwrap(),
            0.0,
        );
        // Channel 0 holds 10 and 14, channel 1 holds 1 and 3, over a batch of two 1x1 images.
        let x = Tensor::new(&[10f32, 1.0, 14.0, 3.0], &dev).unwrap().reshape((2, 2, 1, 1)).unwrap();
        let eval: Vec<f32> = bn.forward(&x, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(eval, [1.0, -0.5, 5.0, 0.5]);
        let train: Vec<f32> = bn.forward(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // Batch means 12 and 2, biased variances 4 and 1.
        assert_eq!(train, [-1.0, -1.5, 3.0, -0.5]);
    }

    #[test]
    fn tracked_statistics_move_by_momentum_in_training_only() {
        let dev = Device::Cpu;
        let ones = Tensor::new(&[1f32, 1.0], &dev).unwrap();
        let zeros = Tensor::new(&[0f32, 0.0], &dev).unwrap();
        let mut bn = BatchNorm2d::new(ones.clone(), zeros.clone(), zeros.clone(), ones.clone(), 0.0);
        let [mean, var] = bn.track_running_stats(0.25).unwrap();
        let x = Tensor::new(&[10f32, 1.0, 14.0, 3.0], &dev).unwrap().reshape((2, 2, 1, 1)).unwrap();
        bn.forward(&x, false).unwrap();
        assert_eq!(mean.as_tensor().to_vec1::<f32>().unwrap(), [0.0, 0.0], "evaluation leaves them");
        bn.forward(&x, true).unwrap();
        // Batch means 12 and 2; unbiased variances 8 and 2 (two values each).
        assert_eq!(mean.as_tensor().to_vec1::<f32>().unwrap(), [3.0, 0.5]);
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [0.75 + 2.0, 0.75 + 0.5]);
        // The layer's own running statistics are the variables: evaluation now uses them.
        assert_eq!(bn.running_mean.to_vec1::<f32>().unwrap(), [3.0, 0.5]);
        let again = bn.track_running_stats(0.25).unwrap();
        assert_eq!(again[0].as_tensor().to_vec1::<f32>().unwrap(), [3.0, 0.5], "the same variables");
        assert!(bn.track_running_stats(0.0).is_err());
    }
}
