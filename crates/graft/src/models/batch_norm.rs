//! 2-D batch normalisation over `[N, C, H, W]`: running statistics in evaluation, the batch's
//! own statistics (biased variance, as PyTorch normalises with) in training. Updating the
//! running statistics from training batches is not done here.

use candle_core::Tensor;

use crate::Result;

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
}

impl BatchNorm2d {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.dims1().unwrap_or(0)
    }

    /// Normalises `x` `[N, C, H, W]`: with the running statistics when `train` is false, with
    /// the statistics of `x` itself over `N, H, W` when it is true.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.channels();
        let col = |t: &Tensor| t.reshape((1, c, 1, 1));
        let (mean, var) = if train {
            let mean = staged_mean(x)?;
            let var = staged_mean(&x.broadcast_sub(&mean)?.sqr()?)?;
            (mean, var)
        } else {
            (col(&self.running_mean)?, col(&self.running_var)?)
        };
        let scale = col(&self.weight)?.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_mul(&scale)?.broadcast_add(&col(&self.bias)?)?)
    }
}

/// Per-channel mean of `[N, C, H, W]` over `N, H, W`, reduced one dimension at a time: summed in
/// one pass over all `N * H * W` values of a channel, f32 rounding builds up enough to move
/// training-mode logits ten times further from a float64 reference (2e-3 instead of 2e-4 on four
/// 224x224 images, tests/efficientnet_parity.rs).
fn staged_mean(x: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    Ok((x.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)? / (n * h * w) as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn eval_uses_running_statistics_and_train_the_batch() {
        let dev = Device::Cpu;
        let bn = BatchNorm2d {
            weight: Tensor::new(&[2f32, 0.5], &dev).unwrap(),
            bias: Tensor::new(&[1f32, -1.0], &dev).unwrap(),
            running_mean: Tensor::new(&[10f32, 0.0], &dev).unwrap(),
            running_var: Tensor::new(&[4f32, 1.0], &dev).unwrap(),
            eps: 0.0,
        };
        // Channel 0 holds 10 and 14, channel 1 holds 1 and 3, over a batch of two 1x1 images.
        let x = Tensor::new(&[10f32, 1.0, 14.0, 3.0], &dev).unwrap().reshape((2, 2, 1, 1)).unwrap();
        let eval: Vec<f32> = bn.forward(&x, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(eval, [1.0, -0.5, 5.0, 0.5]);
        let train: Vec<f32> = bn.forward(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // Batch means 12 and 2, biased variances 4 and 1.
        assert_eq!(train, [-1.0, -1.5, 3.0, -0.5]);
    }
}
