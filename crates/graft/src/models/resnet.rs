//! ResNet (He et al. 2015) in torchvision's layout and parameter names, so that a torchvision
//! state dict saved as safetensors (or with `torch.save`) loads as it is: `conv1`, `bn1`,
//! `layer{1..4}.{b}.conv{1,2[,3]}` / `bn{1,2[,3]}` / `downsample.0` (1x1 convolution) and
//! `downsample.1` (its batch norm), `fc`.
//!
//! ResNet-18 / 34 stack basic blocks (two 3x3 convolutions), ResNet-50 / 101 / 152 bottleneck
//! blocks in torchvision's "v1.5" form: 1x1, 3x3 with the stage's stride, 1x1 to four times the
//! width. Batch norms use eps 1e-5; the forward pass runs in evaluation mode (running
//! statistics) or training mode (batch statistics; the running statistics are not updated).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::batch_norm::BatchNorm2d;
use super::named::{about_file, NamedTensors};
use crate::Result;

/// Batch-norm epsilon of torchvision's ResNets.
const BN_EPS: f64 = 1e-5;

/// Width (channels of the 3x3 convolutions) of the four stages.
const STAGE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// The ResNet variants of torchvision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetArch {
    /// ResNet-18: basic blocks, 2-2-2-2.
    ResNet18,
    /// ResNet-34: basic blocks, 3-4-6-3.
    ResNet34,
    /// ResNet-50: bottleneck blocks, 3-4-6-3.
    ResNet50,
    /// ResNet-101: bottleneck blocks, 3-4-23-3.
    ResNet101,
    /// ResNet-152: bottleneck blocks, 3-8-36-3.
    ResNet152,
}

impl ResNetArch {
    /// Blocks in each of the four stages.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNetArch::ResNet18 => [2, 2, 2, 2],
            ResNetArch::ResNet34 | ResNetArch::ResNet50 => [3, 4, 6, 3],
            ResNetArch::ResNet101 => [3, 4, 23, 3],
            ResNetArch::ResNet152 => [3, 8, 36, 3],
        }
    }

    /// Whether the blocks are bottlenecks (1x1, 3x3, 1x1 with four-fold expansion).
    pub fn bottleneck(self) -> bool {
        !matches!(self, ResNetArch::ResNet18 | ResNetArch::ResNet34)
    }

    /// Channels of the pooled features: 512, or 2048 with bottlenecks.
    pub fn feature_dim(self) -> usize {
        512 * self.expansion()
    }

    /// Name for messages, e.g. `ResNet-50`.
    pub fn name(self) -> &'static str {
        match self {
            ResNetArch::ResNet18 => "ResNet-18",
            ResNetArch::ResNet34 => "ResNet-34",
            ResNetArch::ResNet50 => "ResNet-50",
            ResNetArch::ResNet101 => "ResNet-101",
            ResNetArch::ResNet152 => "ResNet-152",
        }
    }

    fn expansion(self) -> usize {
        if self.bottleneck() {
            4
        } else {
            1
        }
    }
}

/// A bias-free convolution (padding `kernel / 2` on every side) followed by a batch norm.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    weight: Tensor,
    stride: usize,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Takes `{conv}.weight` of shape `shape` and the batch norm `bn`.
    fn take(w: &mut NamedTensors, conv: &str, bn: &str, shape: [usize; 4], stride: usize) -> Result<Self> {
        let weight = w.take(&format!("{conv}.weight"), &shape)?;
        Ok(ConvBn { weight, stride, bn: w.batch_norm(bn, shape[0], BN_EPS)? })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let padding = self.weight.dim(2)? / 2;
        self.bn.forward(&x.conv2d(&self.weight, padding, self.stride, 1, 1)?, train)
    }
}

/// A residual block: its convolutions (ReLU between them), the shortcut (identity, or a 1x1
/// convolution and batch norm where the shape changes), the sum, then ReLU.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h, train)?;
            if j + 1 < self.convs.len() {
                h = h.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x, train)?,
            None => x.clone(),
        };
        Ok((h + shortcut)?.relu()?)
    }
}

/// A torchvision ResNet with its classifier.
#[derive(Debug, Clone)]
pub struct ResNet {
    arch: ResNetArch,
    stem: ConvBn,
    blocks: Vec<Block>,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl ResNet {
    /// Loads the `arch` weights at `path` (any format `io::torch::read_tensors` reads:
    /// safetensors, `torch.save`) onto `device` as `dtype`.
    pub fn load(arch: ResNetArch, path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let tensors = crate::io::torch::read_tensors(path, &Device::Cpu)?;
        Self::from_tensors(arch, tensors, device, dtype).map_err(|e| about_file(path, e))
    }

    /// Builds `arch` from named tensors with torchvision's names. Every tensor must be used
    /// (`num_batches_tracked` counters aside) and have the shape the architecture expects; the
    /// number of classes is read from `fc.weight`.
    pub fn from_tensors(
        arch: ResNetArch,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut w = NamedTensors::new(tensors, device, dtype);
        let stem = ConvBn::take(&mut w, "conv1", "bn1", [64, 3, 7, 7], 2)?;
        let mut blocks = Vec::new();
        let mut inplanes = 64;
        for (stage, (&count, &width)) in arch.blocks().iter().zip(&STAGE_WIDTHS).enumerate() {
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let out = width * arch.expansion();
                let p = format!("layer{}.{b}", stage + 1);
                let mut conv = |i: usize, shape: [usize; 4], stride: usize| {
                    ConvBn::take(&mut w, &format!("{p}.conv{i}"), &format!("{p}.bn{i}"), shape, stride)
                };
                let convs = if arch.bottleneck() {
                    vec![
                        conv(1, [width, inplanes, 1, 1], 1)?,
                        conv(2, [width, width, 3, 3], stride)?,
                        conv(3, [out, width, 1, 1], 1)?,
                    ]
                } else {
                    vec![conv(1, [width, inplanes, 3, 3], stride)?, conv(2, [width, width, 3, 3], 1)?]
                };
                let downsample = if stride != 1 || inplanes != out {
                    let (c, n) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    Some(ConvBn::take(&mut w, &c, &n, [out, inplanes, 1, 1], stride)?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                inplanes = out;
            }
        }
        let fc_weight = w.take("fc.weight", &[0, arch.feature_dim()])?;
        let fc_bias = w.take("fc.bias", &[fc_weight.dim(0)?])?;
        w.finish(arch.name())?;
        Ok(ResNet { arch, stem, blocks, fc_weight, fc_bias })
    }

    /// Which ResNet this is.
    pub fn arch(&self) -> ResNetArch {
        self.arch
    }

    /// Number of output classes (rows of `fc.weight`).
    pub fn num_classes(&self) -> usize {
        self.fc_bias.dims1().unwrap_or(0)
    }

    /// Pooled features `[N, 512]` (ResNet-18 / 34) or `[N, 2048]` of images `[N, 3, H, W]`;
    /// batch norms use batch statistics when `train`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.stem.forward(x, train)?.relu()?;
        // 3x3 max pool, stride 2, padding 1: padding with zeros instead of -inf gives the same
        // maxima because every value is >= 0 after the ReLU and every window holds a real one.
        let mut h = h.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?;
        for b in &self.blocks {
            h = b.forward(&h, train)?;
        }
        Ok(h.mean((2, 3))?)
    }

    /// Class logits `[N, classes]` of images `[N, 3, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&self.features(x, train)?)
    }

    /// Class logits of pooled features (the classifier `fc` alone).
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.matmul(&self.fc_weight.t()?)?.broadcast_add(&self.fc_bias)?)
    }
}
