//! Depthwise convolution: [`crate::ops::depthwise_conv2d`] against candle's grouped `conv2d`
//! (one convolution per channel) on the depthwise layers of EfficientNet-Lite0, forward alone and
//! forward plus backward (gradients of the input and the kernel).

use super::cpu::CpuSnapshot;
use super::{median_ms, Repeats};
use crate::models::efficientnet::LITE0_STAGES;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

/// One distinct depthwise layer shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DepthwiseShape {
    /// Channels (the expanded width of the block).
    pub channels: usize,
    /// Side of the (square) input feature map, before padding.
    pub size: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// How many of the network's blocks have this shape.
    pub count: usize,
}

/// The depthwise layers of EfficientNet-Lite0 for square `image`s, distinct shapes in order.
pub fn lite0_depthwise_shapes(image: usize) -> Vec<DepthwiseShape> {
    let mut size = image.div_ceil(2); // the stride-2 stem
    let mut shapes: Vec<DepthwiseShape> = Vec::new();
    for stage in LITE0_STAGES {
        for r in 0..stage.repeats {
            let (input, stride) = if r == 0 { (stage.input, stage.stride) } else { (stage.output, 1) };
            let shape = DepthwiseShape { channels: input * stage.expand, size, kernel: stage.kernel, stride, count: 1 };
            match shapes.iter_mut().find(|s| DepthwiseShape { count: 1, ..**s } == shape) {
                Some(s) => s.count += 1,
                None => shapes.push(shape),
            }
            size = size.div_ceil(stride);
        }
    }
    shapes
}

/// Median milliseconds of one layer shape, both implementations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthwiseLayerBench {
    /// The layer.
    pub shape: DepthwiseShape,
    /// candle's grouped `conv2d`, forward only.
    pub grouped_forward_ms: f64,
    /// [`crate::ops::depthwise_conv2d`], forward only.
    pub op_forward_ms: f64,
    /// candle's grouped `conv2d`, forward and backward.
    pub grouped_train_ms: f64,
    /// [`crate::ops::depthwise_conv2d`], forward and backward.
    pub op_train_ms: f64,
    /// Largest absolute difference of the two forward outputs (a sanity check).
    pub max_abs_diff: f64,
}

/// The result of [`bench_depthwise`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthwiseBench {
    /// Image side the layer sizes follow from.
    pub image: usize,
    /// Images per batch.
    pub batch: usize,
    /// Every distinct layer shape.
    pub layers: Vec<DepthwiseLayerBench>,
    /// Sum over the network's 16 depthwise layers (each shape times its count), in ms:
    /// grouped forward, op forward, grouped forward + backward, op forward + backward.
    pub network_ms: [f64; 4],
    /// Percent of the machine's CPU other processes used while measuring (worst layer).
    pub max_other_cpu_pct: Option<f64>,
}

/// Times both implementations on every depthwise layer of EfficientNet-Lite0 at `image` ×
/// `image` and `batch` images, on `device` in `dtype`; `on_layer` hears each finished layer.
pub fn bench_depthwise(
    image: usize,
    batch: usize,
    device: &Device,
    dtype: DType,
    repeats: Repeats,
    on_layer: &mut dyn FnMut(&DepthwiseLayerBench),
) -> Result<DepthwiseBench> {
    if image < 32 || batch == 0 || repeats.runs == 0 {
        return Err(GraftError::Input(
            "a depthwise benchmark needs images of at least 32 pixels, a batch of at least 1 and 1 run".into(),
        ));
    }
    let mut layers = Vec::new();
    let mut network_ms = [0.0; 4];
    let mut max_other: Option<f64> = None;
    for shape in lite0_depthwise_shapes(image) {
        let before = CpuSnapshot::take();
        let (c, k, s) = (shape.channels, shape.kernel, shape.stride);
        // TensorFlow SAME padding, as the model pads before the convolution.
        let padded = (shape.size.div_ceil(s) - 1) * s + k;
        let padded = padded.max(shape.size);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch, c, padded, padded), device)?.to_dtype(dtype)?)?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1., (c, 1, k, k), device)? * 0.1)?.to_dtype(dtype)?)?;
        let grouped = || Ok::<_, GraftError>(x.as_tensor().conv2d(w.as_tensor(), 0, s, 1, c)?);
        let op = || Ok::<_, GraftError>(crate::ops::depthwise_conv2d(x.as_tensor(), w.as_tensor(), s)?);
        let train = |y: Tensor| -> Result<()> {
            let grads = y.sqr()?.sum_all()?.backward()?;
            for v in [&x, &w] {
                grads.get(v.as_tensor()).ok_or_else(|| GraftError::Input("no gradient".into()))?;
            }
            Ok(())
        };
        let max_abs_diff =
            (grouped()? - op()?)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let layer = DepthwiseLayerBench {
            shape,
            grouped_forward_ms: median_ms(device, repeats, || grouped().map(drop))?,
            op_forward_ms: median_ms(device, repeats, || op().map(drop))?,
            grouped_train_ms: median_ms(device, repeats, || train(grouped()?))?,
            op_train_ms: median_ms(device, repeats, || train(op()?))?,
            max_abs_diff,
        };
        let times = [layer.grouped_forward_ms, layer.op_forward_ms, layer.grouped_train_ms, layer.op_train_ms];
        for (total, t) in network_ms.iter_mut().zip(times) {
            *total += t * shape.count as f64;
        }
        if let Some(p) = before.zip(CpuSnapshot::take()).and_then(|(a, b)| a.other_pct(&b)) {
            max_other = Some(max_other.map_or(p, |m| m.max(p)));
        }
        on_layer(&layer);
        layers.push(layer);
    }
    Ok(DepthwiseBench { image, batch, layers, network_ms, max_other_cpu_pct: max_other })
}
