//! Building a CNN from a checkpoint's named tensors with strict checks: each tensor is taken
//! once, by name, with its shape checked; a missing one, a wrongly shaped one and (at the end)
//! any left unused are errors that name the tensor. Shared by the vision backbones
//! (EfficientNet, ResNet, VGG).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::batch_norm::BatchNorm2d;
use crate::{GraftError, Result};

/// The named tensors still to be used, and the device and dtype they go to.
pub(crate) struct NamedTensors {
    map: HashMap<String, Tensor>,
    device: Device,
    dtype: DType,
}

impl NamedTensors {
    /// Takes ownership of `tensors`, to be moved to `device` as `dtype` when taken.
    pub(crate) fn new(tensors: Vec<(String, Tensor)>, device: &Device, dtype: DType) -> Self {
        NamedTensors { map: tensors.into_iter().collect(), device: device.clone(), dtype }
    }

    /// Removes tensor `name`, checks its shape (0 = any size) and moves it to the model's
    /// device and dtype.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
        Ok(BatchNorm2d {
            weight: self.take(&format!("{name}.weight"), &c)?,
            bias: self.take(&format!("{name}.bias"), &c)?,
            running_mean: self.take(&format!("{name}.running_mean"), &c)?,
            running_var: self.take(&format!("{name}.running_var"), &c)?,
            eps,
        })
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
