//! Building a CNN from a checkpoint's named tensors with strict checks: each tensor is taken
//! once, by name, with its shape checked; a missing one, a wrongly shaped one and (at the end)
//! any left unused are errors that name the tensor. Shared by the vision backbones
//! (EfficientNet, ResNet, VGG).
//!
//! The same builder makes a randomly initialised network of the architecture (training from
//! scratch, the baseline of every transfer report): [`NamedTensors::random`] draws each tensor
//! when it is taken, in the order the builder takes them, so one seed gives one network.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch_norm::BatchNorm2d;
use crate::{GraftError, Result};

/// The named tensors still to be used, and the device and dtype they go to.
pub(crate) struct NamedTensors {
    map: HashMap<String, Tensor>,
    device: Device,
    dtype: DType,
    random: Option<Random>,
}

/// Where [`NamedTensors::random`] draws from, and the size a wildcard (0) dimension gets.
struct Random {
    rng: ChaCha8Rng,
    wildcard: usize,
}

impl NamedTensors {
    /// Takes ownership of `tensors`, to be moved to `device` as `dtype` when taken.
    pub(crate) fn new(tensors: Vec<(String, Tensor)>, device: &Device, dtype: DType) -> Self {
        NamedTensors { map: tensors.into_iter().collect(), device: device.clone(), dtype, random: None }
    }

    /// No tensors: each one is drawn when taken, from a ChaCha stream seeded with `seed`, as
    /// torchvision initialises its CNNs. Convolutions (4-D): Kaiming with fan-out (uniform in
    /// ±√(6 / fan_out), the variance 2 / fan_out of torchvision's Kaiming normal). Linear
    /// weights (2-D): uniform in ±1/√fan_out (torchvision's EfficientNet classifier). One-D
    /// tensors: batch-norm scales and running variances 1, shifts, running means and biases 0.
    /// A dimension asked for as 0 (any size) becomes `wildcard` (the number of classes).
    pub(crate) fn random(seed: u64, wildcard: usize, device: &Device, dtype: DType) -> Self {
        let random = Some(Random { rng: ChaCha8Rng::seed_from_u64(seed), wildcard });
        NamedTensors { map: HashMap::new(), device: device.clone(), dtype, random }
    }

    /// Draws tensor `name` of `shape` (see [`Self::random`]) on the CPU in f32.
    fn draw(random: &mut Random, name: &str, shape: &[usize]) -> Result<Tensor> {
        use crate::features::head::uniform_within;
        let shape: Vec<usize> = shape.iter().map(|&d| if d == 0 { random.wildcard } else { d }).collect();
        let cpu = &Device::Cpu;
        let fan_out = || shape[0] * shape[2..].iter().product::<usize>();
        Ok(match shape.len() {
            4 => uniform_within(&shape, (6.0 / fan_out() as f32).sqrt(), &mut random.rng, cpu)?,
            2 => uniform_within(&shape, 1.0 / (shape[0] as f32).sqrt(), &mut random.rng, cpu)?,
            _ if name.ends_with(".weight") || name.ends_with("running_var") => Tensor::ones(shape, DType::F32, cpu)?,
            _ => Tensor::zeros(shape, DType::F32, cpu)?,
        })
    }

    /// Removes tensor `name`, checks its shape (0 = any size) and moves it to the model's
    /// device and dtype.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(random) = &mut self.random {
            return Ok(Self::draw(random, name, shape)?.to_device(&self.device)?.to_dtype(self.dtype)?);
        }
        let t = self.map.remove(name).ok_or_else(|| GraftError::Input(format!("tensor `{name}` is missing")))?;
        let ok = t.dims().len() == shape.len() && t.dims().iter().zip(shape).all(|(&d, &s)| s == 0 || d == s);
        if !ok {
            return Err(GraftError::Input(format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.dims())));
        }
        Ok(t.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    /// The batch norm `name` over `channels` channels (`weight`, `bias`, `running_mean`,
    /// `running_var`) with epsilon `eps`.
    pub(crate) fn batch_norm(&mut self, name: &str, channels: usize, eps: f64) -> Result<BatchNorm2d> {
        let c = [channels];
        Ok(BatchNorm2d::new(
            self.take(&format!("{name}.weight"), &c)?,
            self.take(&format!("{name}.bias"), &c)?,
            self.take(&format!("{name}.running_mean"), &c)?,
            self.take(&format!("{name}.running_var"), &c)?,
            eps,
        ))
    }

    /// Fails, naming up to five of them, if any tensor (`num_batches_tracked` counters aside)
    /// was not used by `model`.
    pub(crate) fn finish(self, model: &str) -> Result<()> {
        let mut left: Vec<&String> = self.map.keys().filter(|k| !k.ends_with("num_batches_tracked")).collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort();
        Err(GraftError::Input(format!(
            "{} tensors are not part of {model}: {}",
            left.len(),
            left.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// Maps a reason for refusing named tensors (`GraftError::Input`) to an error about the file
/// at `path`, leaving other errors as they are.
pub(crate) fn about_file(path: &std::path::Path, e: GraftError) -> GraftError {
    match e {
        GraftError::Input(reason) => GraftError::model(path, reason),
        other => other,
    }
}
