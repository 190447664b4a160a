//! VGG (Simonyan & Zisserman 2014) without batch norm, in torchvision's layout and parameter
//! names: `features.{i}` for the 3x3 convolutions (with bias; `i` counts torchvision's layers,
//! ReLUs and max pools included), an adaptive average pool to 7x7, and `classifier.0`,
//! `classifier.3`, `classifier.6` for the three linear layers (ReLU between them). Dropout is not
//! applied, so training and evaluation compute the same function.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::named::{about_file, NamedTensors};
use crate::{GraftError, Result};

/// Side of the adaptive average pool before the classifier.
const POOL: usize = 7;

/// Channels of the last convolution.
const LAST_CHANNELS: usize = 512;

/// The VGG variants of torchvision (configurations A, B, D, E) without batch norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggArch {
    /// VGG-11: 8 convolutions.
    Vgg11,
    /// VGG-13: 10 convolutions.
    Vgg13,
    /// VGG-16: 13 convolutions.
    Vgg16,
    /// VGG-19: 16 convolutions.
    Vgg19,
}

impl VggArch {
    /// Output channels of each convolution in order, `0` for a 2x2 max pool (stride 2).
    pub fn layers(self) -> &'static [usize] {
        match self {
            VggArch::Vgg11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
            VggArch::Vgg13 => &[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
            VggArch::Vgg16 => &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0],
            VggArch::Vgg19 => {
                &[64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0]
            }
        }
    }

    /// Name for messages, e.g. `VGG-16`.
    pub fn name(self) -> &'static str {
        match self {
            VggArch::Vgg11 => "VGG-11",
            VggArch::Vgg13 => "VGG-13",
            VggArch::Vgg16 => "VGG-16",
            VggArch::Vgg19 => "VGG-19",
        }
    }

    /// Width and height an input must have at least (one pixel left after the five pools).
    pub fn min_side(self) -> usize {
        1 << self.layers().iter().filter(|&&c| c == 0).count()
    }
}

/// One layer of the convolutional part.
#[derive(Debug, Clone)]
enum Layer {
    /// 3x3 convolution (padding 1) with bias, then ReLU.
    Conv { weight: Tensor, bias: Tensor },
    /// 2x2 max pool, stride 2.
    Pool,
}

/// A torchvision VGG with its classifier.
#[derive(Debug, Clone)]
pub struct Vgg {
    arch: VggArch,
    layers: Vec<Layer>,
    /// The three linear layers (weight, bias).
    classifier: [(Tensor, Tensor); 3],
}

impl Vgg {
    /// Loads the `arch` weights at `path` (any format `io::torch::read_tensors` reads:
    /// safetensors, `torch.save`) onto `device` as `dtype`.
    pub fn load(arch: VggArch, path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let tensors = crate::io::torch::read_tensors(path, &Device::Cpu)?;
        Self::from_tensors(arch, tensors, device, dtype).map_err(|e| about_file(path, e))
    }

    /// Builds `arch` from named tensors with torchvision's names. Every tensor must be used and
    /// have the shape the architecture expects; the widths of the hidden linear layers (4096 in
    /// torchvision) and the number of classes are read from the classifier's weights.
    pub fn from_tensors(arch: VggArch, tensors: Vec<(String, Tensor)>, device: &Device, dtype: DType) -> Result<Self> {
        let mut w = NamedTensors::new(tensors, device, dtype);
        let mut layers = Vec::new();
        let (mut index, mut channels) = (0, 3);
        for &out in arch.layers() {
            if out == 0 {
                layers.push(Layer::Pool);
                index += 1;
                continue;
            }
            let weight = w.take(&format!("features.{index}.weight"), &[out, channels, 3, 3])?;
            let bias = w.take(&format!("features.{index}.bias"), &[out])?;
            layers.push(Layer::Conv { weight, bias });
            // The convolution and its ReLU.
            index += 2;
            channels = out;
        }
        let mut inputs = LAST_CHANNELS * POOL * POOL;
        let mut linear = |i: usize| -> Result<(Tensor, Tensor)> {
            let weight = w.take(&format!("classifier.{i}.weight"), &[0, inputs])?;
            inputs = weight.dim(0)?;
            Ok((weight, w.take(&format!("classifier.{i}.bias"), &[inputs])?))
        };
        let classifier = [linear(0)?, linear(3)?, linear(6)?];
        w.finish(arch.name())?;
        Ok(Vgg { arch, layers, classifier })
    }

    /// Which VGG this is.
    pub fn arch(&self) -> VggArch {
        self.arch
    }

    /// Number of output classes (rows of `classifier.6.weight`).
    pub fn num_classes(&self) -> usize {
        self.classifier[2].1.dims1().unwrap_or(0)
    }

    /// Pooled features `[N, 512 * 7 * 7]` (what the classifier takes, flattened channel-major
    /// as in torchvision) of images `[N, 3, H, W]`, H and W at least [`VggArch::min_side`].
    /// `train` changes nothing (no batch norm; dropout is not applied).
    pub fn features(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let min = self.arch.min_side();
        if h < min || w < min {
            return Err(GraftError::Input(format!(
                "{} needs images of at least {min}x{min} pixels, got {h}x{w}",
                self.arch.name()
            )));
        }
        let mut h = x.clone();
        for layer in &self.layers {
            h = match layer {
                Layer::Conv { weight, bias } => {
                    h.conv2d(weight, 1, 1, 1, 1)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?.relu()?
                }
                Layer::Pool => h.max_pool2d(2)?,
            };
        }
        Ok(adaptive_avg_pool2d(&h, POOL, POOL)?.flatten_from(1)?)
    }

    /// Class logits `[N, classes]` of images `[N, 3, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&self.features(x, train)?)
    }

    /// Class logits of pooled features (the classifier alone).
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        let mut h = features.clone();
        for (i, (weight, bias)) in self.classifier.iter().enumerate() {
            h = h.matmul(&weight.t()?)?.broadcast_add(bias)?;
            if i + 1 < self.classifier.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

/// PyTorch's `adaptive_avg_pool2d` of `x` `[N, C, H, W]` to `[N, C, out_h, out_w]` for any
/// input size: output cell `i` averages input rows `floor(i * H / out_h)` to
/// `ceil((i + 1) * H / out_h)` (exclusive), and likewise for columns. The window is a product of
/// a row range and a column range, so it is pooled over rows, then over columns.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let pool = |x: &Tensor, dim: usize, out: usize| -> Result<Tensor> {
        let size = x.dim(dim)?;
        if size == out {
            return Ok(x.clone());
        }
        let cells = (0..out)
            .map(|i| {
                let (start, end) = (i * size / out, ((i + 1) * size).div_ceil(out));
                Ok(x.narrow(dim, start, end - start)?.mean_keepdim(dim)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&cells, dim)?)
    };
    pool(&pool(x, 2, out_h)?, 3, out_w)
}
