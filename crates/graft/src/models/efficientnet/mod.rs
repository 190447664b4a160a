//! EfficientNet-Lite0 (the mobile variant of EfficientNet-B0: no squeeze-and-excitation, ReLU6,
//! a fixed 32-channel stem and 1280-channel head), with the parameter names of lukemelas'
//! `efficientnet_pytorch` that the `efficientnet-lite0` checkpoint uses: `_conv_stem`, `_bn0`,
//! `_blocks.{i}._expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` / `_project_conv` / `_bn2`,
//! `_conv_head`, `_bn1`, `_fc`.
//!
//! Convolutions pad like TensorFlow's `SAME` (as the checkpoint was trained with): the total
//! padding `max((ceil(in / stride) - 1) * stride + kernel - in, 0)` is split with the extra
//! pixel at the bottom / right. Batch norms use eps 1e-3. The forward pass runs in evaluation
//! mode (running statistics) or training mode (batch statistics); drop-connect and dropout are
//! not applied. Depthwise convolutions run as `ops::depthwise_conv2d`, which has its own backward.
//!
//! LoRA ([`EfficientNetLite::add_lora`]) attaches to the 1x1 convolutions (each block's
//! `_expand_conv` and `_project_conv`, and `_conv_head`): a 1x1 convolution is a linear map over
//! channels, so the update `s · B A` runs on the pixels as rows (`[N·H·W, C]`) beside the frozen
//! convolution, whose output it is added to. With `B = 0` (a new adapter) the output is exactly
//! the frozen model's. [`EfficientNetLite::merge_lora`] folds the updates into the weights.

/// Batch normalisation, shared with the other vision backbones (kept at this path too).
pub use super::batch_norm;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::linear::ProjAdapter;
use super::named::{about_file, NamedTensors};
use crate::adapters::lora::{master_dtype, DropoutClock, LoraLayer, LoraSpec};
use crate::{GraftError, Result};
use batch_norm::BatchNorm2d;

/// Batch-norm epsilon of the EfficientNet family.
const BN_EPS: f64 = 1e-3;

/// One stage of MBConv blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Blocks in the stage.
    pub repeats: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the stage's first block (the others use 1).
    pub stride: usize,
    /// Expansion ratio of the inverted bottleneck.
    pub expand: usize,
    /// Input channels of the first block.
    pub input: usize,
    /// Output channels.
    pub output: usize,
}

/// The seven stages of EfficientNet-B0 / Lite0 (16 blocks).
pub const LITE0_STAGES: [Stage; 7] = [
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 1, input: 32, output: 16 },
    Stage { repeats: 2, kernel: 3, stride: 2, expand: 6, input: 16, output: 24 },
    Stage { repeats: 2, kernel: 5, stride: 2, expand: 6, input: 24, output: 40 },
    Stage { repeats: 3, kernel: 3, stride: 2, expand: 6, input: 40, output: 80 },
    Stage { repeats: 3, kernel: 5, stride: 1, expand: 6, input: 80, output: 112 },
    Stage { repeats: 4, kernel: 5, stride: 2, expand: 6, input: 112, output: 192 },
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 6, input: 192, output: 320 },
];

/// A bias-free convolution with TensorFlow `SAME` padding, and on a 1x1 convolution an
/// optional LoRA update.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    stride: usize,
    groups: usize,
    lora: Option<Arc<LoraLayer>>,
}

impl Conv {
    /// Applies the convolution to `x` `[N, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (_, _, kh, kw) = self.weight.dims4()?;
        let same = |size: usize, k: usize| {
            let total = ((size.div_ceil(self.stride) - 1) * self.stride + k).saturating_sub(size);
            (total / 2, total - total / 2)
        };
        let ((top, bottom), (left, right)) = (same(h, kh), same(w, kw));
        let x = x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?;
        if self.groups > 1 && self.groups == self.weight.dim(0)? && self.weight.dim(1)? == 1 {
            // Depthwise: one graph node with its own backward instead of a convolution per channel.
            return Ok(crate::ops::depthwise_conv2d(&x, &self.weight, self.stride)?);
        }
        let y = if self.is_pointwise() {
            // A 1x1 convolution is a product over channels (`[O, C]` by each image's `[C, H·W]`),
            // whose backward is two matmuls, where candle's convolution backward runs a
            // transposed convolution that is many times slower on the CPU.
            let (n, c, h, w) = x.dims4()?;
            let weight = self.weight.reshape((self.weight.dim(0)?, c))?;
            crate::ops::pointwise_conv(&x.reshape((n, c, h * w))?, &weight)?.reshape((n, (), h, w))?
        } else {
            x.conv2d(&self.weight, 0, self.stride, 1, self.groups)?
        };
        match &self.lora {
            // Channels last, each pixel a row: the update is the linear layer's.
            Some(lora) => {
                let last = (0, 2, 3, 1);
                Ok(lora.apply(&x.permute(last)?, y.permute(last)?)?.permute((0, 3, 1, 2))?.contiguous()?)
            }
            None => Ok(y),
        }
    }

    /// Whether the convolution is 1x1 with stride 1 (a linear map over channels).
    fn is_pointwise(&self) -> bool {
        let d = self.weight.dims();
        d[2] == 1 && d[3] == 1 && self.stride == 1 && self.groups == 1
    }

    /// Folds the LoRA update into the weight (`W ← W + s · B A`) and drops the adapter.
    fn merge_lora(&mut self) -> Result<()> {
        if let Some(lora) = self.lora.take() {
            let delta = lora.delta_weight()?.to_dtype(self.weight.dtype())?.reshape(self.weight.shape())?;
            self.weight = (&self.weight + delta)?;
        }
        Ok(())
    }
}

/// Convolution, batch norm and (optionally) ReLU6, with the checkpoint names of both.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm2d,
    relu6: bool,
    conv_name: String,
    bn_name: String,
}

impl ConvBn {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn.forward(&self.conv.forward(x)?, train)?;
        Ok(if self.relu6 { crate::ops::relu6(&y)? } else { y })
    }

    /// Every tensor under its checkpoint name.
    fn named(&self, out: &mut Vec<(String, Tensor)>) {
        self.trainable_named(out);
        let b = &self.bn_name;
        out.push((format!("{b}.running_mean"), self.bn.running_mean.clone()));
        out.push((format!("{b}.running_var"), self.bn.running_var.clone()));
    }

    /// Appends what [`Self::make_trainable`] trains, under its checkpoint names, as it stands.
    fn trainable_named(&self, out: &mut Vec<(String, Tensor)>) {
        let (c, b) = (&self.conv_name, &self.bn_name);
        out.push((format!("{c}.weight"), self.conv.weight.clone()));
        out.push((format!("{b}.weight"), self.bn.weight.clone()));
        out.push((format!("{b}.bias"), self.bn.bias.clone()));
    }

    /// Makes the convolution weight and the batch norm's scale and shift variables (the running
    /// statistics stay fixed) and appends them to `out` under their checkpoint names.
    fn make_trainable(&mut self, out: &mut Vec<(String, Var)>) -> Result<()> {
        for (name, t) in [
            (format!("{}.weight", self.conv_name), &mut self.conv.weight),
            (format!("{}.weight", self.bn_name), &mut self.bn.weight),
            (format!("{}.bias", self.bn_name), &mut self.bn.bias),
        ] {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            out.push((name, var));
        }
        Ok(())
    }
}

/// An inverted-bottleneck block: 1x1 expansion (unless the ratio is 1), depthwise convolution,
/// 1x1 projection, and the identity added back when the shape is kept.
#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn layers_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.expand.iter_mut().chain([&mut self.depthwise, &mut self.project])
    }

    fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        self.expand.iter().chain([&self.depthwise, &self.project])
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        if let Some(e) = &self.expand {
            h = e.forward(&h, train)?;
        }
        let h = self.project.forward(&self.depthwise.forward(&h, train)?, train)?;
        Ok(if self.residual { (h + x)? } else { h })
    }
}

/// Channels of the three maps of [`EfficientNetLite::pyramid`] (strides 4, 8 and 16).
pub const PYRAMID_CHANNELS: [usize; 3] = [24, 40, 112];

/// Channels of the head convolution, the width of the pooled features.
pub const FEATURE_DIM: usize = 1280;

/// EfficientNet-Lite0 with its classifier.
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl EfficientNetLite {
    /// Loads the checkpoint at `path` (any format `io::torch::read_tensors` reads) onto `device`
    /// as `dtype`.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let tensors = crate::io::torch::read_tensors(path, &Device::Cpu)?;
        Self::from_tensors(tensors, device, dtype).map_err(|e| about_file(path, e))
    }

    /// Builds the model from named tensors; every tensor must be used (`num_batches_tracked`
    /// counters aside) and have the shape the architecture expects.
    pub fn from_tensors(tensors: Vec<(String, Tensor)>, device: &Device, dtype: DType) -> Result<Self> {
        let mut w = NamedTensors::new(tensors, device, dtype);
        let model = Self::build(&mut w)?;
        w.finish("EfficientNet-Lite0")?;
        Ok(model)
    }

    /// The architecture with random weights (training from scratch): convolutions Kaiming
    /// (fan-out), batch norms at scale 1 and shift 0 with running mean 0 and variance 1, a
    /// classifier of `classes` outputs; drawn from a ChaCha stream seeded with `seed`
    /// (`models::named`), so a seed always gives the same network.
    pub fn random(classes: usize, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        if classes == 0 {
            return Err(GraftError::Input("a classifier needs at least one class".into()));
        }
        Self::build(&mut NamedTensors::random(seed, classes, device, dtype))
    }

    fn build(w: &mut NamedTensors) -> Result<Self> {
        let stem = conv_bn(w, "_conv_stem", "_bn0", [32, 3, 3, 3], 2, 1, true)?;
        let mut blocks = Vec::new();
        for stage in LITE0_STAGES {
            for r in 0..stage.repeats {
                let i = blocks.len();
                let (input, stride) = if r == 0 { (stage.input, stage.stride) } else { (stage.output, 1) };
                let hidden = input * stage.expand;
                let p = format!("_blocks.{i}.");
                let expand = match stage.expand {
                    1 => None,
                    _ => Some(conv_bn(
                        w,
                        &format!("{p}_expand_conv"),
                        &format!("{p}_bn0"),
                        [hidden, input, 1, 1],
                        1,
                        1,
                        true,
                    )?),
                };
                let k = stage.kernel;
                let depthwise = conv_bn(
                    w,
                    &format!("{p}_depthwise_conv"),
                    &format!("{p}_bn1"),
                    [hidden, 1, k, k],
                    stride,
                    hidden,
                    true,
                )?;
                let project = conv_bn(
                    w,
                    &format!("{p}_project_conv"),
                    &format!("{p}_bn2"),
                    [stage.output, hidden, 1, 1],
                    1,
                    1,
                    false,
                )?;
                blocks.push(MbConv { expand, depthwise, project, residual: stride == 1 && input == stage.output });
            }
        }
        let head = conv_bn(w, "_conv_head", "_bn1", [FEATURE_DIM, 320, 1, 1], 1, 1, true)?;
        let fc_weight = w.take("_fc.weight", &[0, FEATURE_DIM])?;
        let classes = fc_weight.dim(0)?;
        let fc_bias = w.take("_fc.bias", &[classes])?;
        Ok(EfficientNetLite { stem, blocks, head, fc_weight, fc_bias })
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.fc_weight.device().clone()
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.fc_weight.dtype()
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.fc_bias.dims1().unwrap_or(0)
    }

    /// Width of the pooled features ([`FEATURE_DIM`]).
    pub fn feature_dim(&self) -> usize {
        FEATURE_DIM
    }

    /// Pooled features `[N, 1280]` of images `[N, 3, H, W]` (normalised as for ImageNet); batch
    /// norms use batch statistics when `train`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.run_units(x, 0..LITE0_UNITS, train)?.mean((2, 3))?)
    }

    /// Runs the units `units` of the network on `h`, bottom-up numbering: 0 the stem, 1 to 7
    /// the stages, 8 the head convolution (so `0..LITE0_UNITS` maps images to the head's map
    /// before pooling). `h` must be what the unit below `units.start` outputs (images for 0).
    /// Progressive columns run a shared frozen bottom once and their own copies of the top.
    pub fn run_units(&self, h: &Tensor, units: std::ops::Range<usize>, train: bool) -> Result<Tensor> {
        if units.end > LITE0_UNITS {
            return Err(GraftError::Input(format!(
                "EfficientNet-Lite0 has {LITE0_UNITS} units (stem, 7 stages, head), not {}",
                units.end
            )));
        }
        let stages = Self::stage_blocks();
        let mut h = h.clone();
        for u in units {
            h = match u {
                0 => self.stem.forward(&h, train)?,
                8 => self.head.forward(&h, train)?,
                s => {
                    for b in &self.blocks[stages[s - 1].clone()] {
                        h = b.forward(&h, train)?;
                    }
                    h
                }
            };
        }
        Ok(h)
    }

    /// Output channels of unit `u` in [`Self::run_units`]' numbering.
    pub fn unit_channels(u: usize) -> usize {
        match u {
            0 => 32,
            1..=7 => LITE0_STAGES[u - 1].output,
            _ => FEATURE_DIM,
        }
    }

    /// A copy whose every tensor is a plain (non-variable) tensor with the current values:
    /// a trained copy frozen for good (LoRA adapters are not carried over).
    pub fn detached(&self) -> Result<Self> {
        let tensors = self.named_tensors().into_iter().map(|(n, t)| (n, t.detach())).collect();
        Self::from_tensors(tensors, &self.device(), self.dtype())
    }

    /// The feature maps dense heads (detection, segmentation) read: the outputs of the second,
    /// third and fifth stages, at strides 4, 8 and 16 with [`PYRAMID_CHANNELS`] channels. The
    /// stages above the fifth and the head convolution are not run.
    pub fn pyramid(&self, x: &Tensor, train: bool) -> Result<[Tensor; 3]> {
        let stages = Self::stage_blocks();
        let mut h = self.stem.forward(x, train)?;
        let mut kept = Vec::with_capacity(3);
        for (s, range) in stages.iter().enumerate().take(5) {
            for b in &self.blocks[range.clone()] {
                h = b.forward(&h, train)?;
            }
            if matches!(s, 1 | 2 | 4) {
                kept.push(h.clone());
            }
        }
        Ok(kept.try_into().expect("three stages kept"))
    }

    /// Class logits `[N, classes]` of images `[N, 3, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&self.features(x, train)?)
    }

    /// Class logits `[N, classes]` of pooled features `[N, 1280]` (the classifier alone), so
    /// that features computed once give the logits too.
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.matmul(&self.fc_weight.t()?)?.broadcast_add(&self.fc_bias)?)
    }

    /// The blocks of each of the seven stages, as index ranges into `blocks`.
    fn stage_blocks() -> Vec<std::ops::Range<usize>> {
        let mut start = 0;
        LITE0_STAGES
            .iter()
            .map(|s| {
                start += s.repeats;
                start - s.repeats..start
            })
            .collect()
    }

    /// Makes the top `k` of the [`LITE0_UNITS`] units trainable — from the top: the 1x1 head
    /// convolution, then the stages from the seventh down, then the stem (`k = 9`: every
    /// convolution) — and returns their variables under their checkpoint names: convolution
    /// weights and batch-norm scales and shifts. Running statistics stay fixed, so train with
    /// `train = false` (frozen batch norm). The ImageNet classifier `_fc` is never included.
    pub fn unfreeze_top(&mut self, k: usize) -> Result<Vec<(String, Var)>> {
        if k > LITE0_UNITS {
            return Err(GraftError::Input(format!(
                "cannot unfreeze the top {k} units of EfficientNet-Lite0: it has {LITE0_UNITS} (stem, 7 stages, head)"
            )));
        }
        let mut vars = Vec::new();
        if k >= 1 {
            self.head.make_trainable(&mut vars)?;
        }
        let stages = Self::stage_blocks();
        for stage in stages.iter().rev().take(k.saturating_sub(1)) {
            for block in &mut self.blocks[stage.clone()] {
                for layer in block.layers_mut() {
                    layer.make_trainable(&mut vars)?;
                }
            }
        }
        if k == LITE0_UNITS {
            self.stem.make_trainable(&mut vars)?;
        }
        Ok(vars)
    }

    /// The tensors [`Self::unfreeze_top`]`(k)` trains, under their checkpoint names, with the
    /// values they have now: what a trained copy of the top units differs from the base in.
    pub fn top_unit_tensors(&self, k: usize) -> Result<Vec<(String, Tensor)>> {
        if k > LITE0_UNITS {
            return Err(GraftError::Input(format!(
                "EfficientNet-Lite0 has {LITE0_UNITS} units (stem, 7 stages, head), not {k}"
            )));
        }
        let stages = Self::stage_blocks();
        let layers_of = |u: usize| match u {
            0 | 8 => 1,
            s => self.blocks[stages[s - 1].clone()].iter().map(|b| b.layers().count()).sum(),
        };
        let top_layers: usize = (LITE0_UNITS - k..LITE0_UNITS).map(layers_of).sum();
        let all: Vec<&ConvBn> = std::iter::once(&self.stem)
            .chain(self.blocks.iter().flat_map(MbConv::layers))
            .chain(std::iter::once(&self.head))
            .collect();
        let mut out = Vec::new();
        for layer in &all[all.len() - top_layers..] {
            layer.trainable_named(&mut out);
        }
        Ok(out)
    }

    /// Every convolution-and-batch-norm layer, stem to head.
    fn conv_bns_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        std::iter::once(&mut self.stem)
            .chain(self.blocks.iter_mut().flat_map(MbConv::layers_mut))
            .chain(std::iter::once(&mut self.head))
    }

    /// Makes every batch norm update its running statistics in training-mode passes (`train =
    /// true` in [`Self::features`]) with weight `momentum` (training from scratch: evaluation
    /// then normalises with what training saw), and returns them as variables under their
    /// checkpoint names (`_bn0.running_mean`, ...) for checkpoints to save and restore.
    pub fn track_running_stats(&mut self, momentum: f64) -> Result<Vec<(String, Var)>> {
        let mut out = Vec::new();
        for layer in self.conv_bns_mut() {
            let [mean, var] = layer.bn.track_running_stats(momentum)?;
            out.push((format!("{}.running_mean", layer.bn_name), mean));
            out.push((format!("{}.running_var", layer.bn_name), var));
        }
        Ok(out)
    }

    /// Every tensor under its checkpoint name (trained ones as they stand), in network order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.stem.named(&mut out);
        for layer in self.blocks.iter().flat_map(MbConv::layers) {
            layer.named(&mut out);
        }
        self.head.named(&mut out);
        out.push(("_fc.weight".into(), self.fc_weight.clone()));
        out.push(("_fc.bias".into(), self.fc_bias.clone()));
        out
    }

    /// Writes the model as safetensors with the checkpoint's names, which [`Self::load`] reads
    /// back (written beside `path`, then renamed into place). LoRA updates are merged into the
    /// written weights (the model itself keeps its adapters), so the file is a plain checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut plain = self.clone();
        plain.merge_lora()?;
        crate::io::safetensors::save_atomic(plain.named_tensors(), path)
    }

    /// The 1x1 convolutions LoRA attaches to, in network order: each block's `_expand_conv`
    /// (blocks of expansion ratio 1 have none) and `_project_conv`, then `_conv_head`.
    fn pointwise_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.blocks
            .iter_mut()
            .flat_map(|b| b.expand.iter_mut().chain([&mut b.project]))
            .chain([&mut self.head])
            .filter(|l| l.conv.is_pointwise())
    }

    /// Attaches a LoRA adapter of rank `r` and scale `alpha / r` to every 1x1 convolution
    /// (32 of them) and returns its variables, named as [`Self::lora_vars`] names them. `A` is
    /// drawn Kaiming-uniform from a ChaCha stream seeded with `seed` and `B` is zero (PEFT's
    /// initialisation), so the model's output is unchanged until `B` trains; the factors are
    /// f32 for a half-precision model. The base weights stay frozen.
    pub fn add_lora(&mut self, r: usize, alpha: f64, seed: u64) -> Result<Vec<(String, Var)>> {
        let spec = LoraSpec { r, alpha, dropout: 0.0, rslora: false, targets: Vec::new() };
        spec.validate()?;
        if !self.lora_vars().is_empty() {
            return Err(GraftError::Input("EfficientNet-Lite0 already has LoRA adapters".into()));
        }
        let (dtype, device) = (master_dtype(self.dtype()), self.device());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let clock = Arc::new(DropoutClock::default());
        for layer in self.pointwise_mut() {
            let dims = (layer.conv.weight.dim(0)?, layer.conv.weight.dim(1)?);
            let lora = LoraLayer::init(&layer.conv_name, dims, &spec, dtype, &device, &mut rng, clock.clone())?;
            layer.conv.lora = Some(Arc::new(lora));
        }
        Ok(self.lora_vars())
    }

    /// The LoRA variables in network order, `{conv}.lora_A` `[r, in]` then `{conv}.lora_B`
    /// `[out, r]` for each adapted convolution (`_blocks.3._project_conv.lora_A`); empty when
    /// none are attached.
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        let convs = self.blocks.iter().flat_map(|b| b.expand.iter().chain([&b.project])).chain([&self.head]);
        convs
            .filter_map(|l| l.conv.lora.as_ref().map(|lora| (&l.conv_name, lora)))
            .flat_map(|(name, lora)| {
                [(format!("{name}.lora_A"), lora.a().clone()), (format!("{name}.lora_B"), lora.b().clone())]
            })
            .collect()
    }

    /// Folds every LoRA update into its convolution's weight (`W ← W + s · B A`) and removes
    /// the adapters: a plain model whose outputs equal the adapted one's up to rounding.
    pub fn merge_lora(&mut self) -> Result<()> {
        self.pointwise_mut().try_for_each(|l| l.conv.merge_lora())
    }
}

/// Units [`EfficientNetLite::unfreeze_top`] counts: the stem, the seven stages and the head.
pub const LITE0_UNITS: usize = 9;

/// The convolution `conv` with weight shape `shape` and its batch norm `bn_name`.
fn conv_bn(
    w: &mut NamedTensors,
    conv: &str,
    bn_name: &str,
    shape: [usize; 4],
    stride: usize,
    groups: usize,
    relu6: bool,
) -> Result<ConvBn> {
    let weight = w.take(&format!("{conv}.weight"), &shape)?;
    let bn = w.batch_norm(bn_name, shape[0], BN_EPS)?;
    Ok(ConvBn {
        conv: Conv { weight, stride, groups, lora: None },
        bn,
        relu6,
        conv_name: conv.to_string(),
        bn_name: bn_name.to_string(),
    })
}
