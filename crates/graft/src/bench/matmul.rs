//! The products of a training step through a model's weights, in f32 (candle's matmul) and in
//! `bf16-mixed` precision ([`crate::ops::MatmulPrecision`]): milliseconds, GFLOP/s and how far
//! the mixed result lies from the f32 one, per shape.

use super::cpu::CpuSnapshot;
use super::{median_ms, Repeats};
use crate::ops::{with_matmul_precision, MatmulPrecision};
use crate::Result;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;

/// One product `[m, k] · [k, n]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductShape {
    /// What it is in the model (`q_proj forward`, `down_proj input gradient`, ...).
    pub name: String,
    /// Rows (tokens of the batch).
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns.
    pub n: usize,
}

/// The distinct products through the weights of a Llama block and its LM head for `tokens`
/// rows: each projection forward (`x Wᵀ`) and its input gradient (`g W`), and one 4,096-row
/// slice of the vocabulary (the frozen-head loss reads the head in such slices). The
/// dimensions are the model's hidden size, key/value width and MLP width.
pub fn llama_product_shapes(tokens: usize, hidden: usize, kv: usize, mlp: usize) -> Vec<ProductShape> {
    let mut shapes = Vec::new();
    for (name, inp, out) in [
        ("q_proj / o_proj", hidden, hidden),
        ("k_proj / v_proj", hidden, kv),
        ("gate_proj / up_proj", hidden, mlp),
        ("down_proj", mlp, hidden),
        ("LM head slice", hidden, 4096),
    ] {
        shapes.push(ProductShape { name: format!("{name} forward"), m: tokens, k: inp, n: out });
        shapes.push(ProductShape { name: format!("{name} input gradient"), m: tokens, k: out, n: inp });
    }
    shapes
}

/// Median timings of one shape in both precisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductBench {
    /// The product.
    pub shape: ProductShape,
    /// candle's f32 matmul, ms.
    pub f32_ms: f64,
    /// The same product under `bf16-mixed`, ms.
    pub mixed_ms: f64,
    /// `2 m k n / time`, GFLOP/s: f32, mixed.
    pub gflops: [f64; 2],
    /// Largest `|mixed − f32|` over the output, divided by the largest `|f32|`.
    pub max_rel_diff: f64,
}

/// The result of [`bench_matmul`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulBench {
    /// What `bf16-mixed` ran as on this CPU (`f32` without AVX-512 BF16).
    pub mixed_runs_as: MatmulPrecision,
    /// Every shape.
    pub products: Vec<ProductBench>,
    /// Percent of the machine's CPU other processes used while measuring (worst shape).
    pub max_other_cpu_pct: Option<f64>,
}

/// Times every product of `shapes` on normal-random f32 operands on the CPU, with the weight
/// operand a transposed view as the training ops pass it; `on_shape` reports each one.
pub fn bench_matmul(
    shapes: &[ProductShape],
    repeats: Repeats,
    on_shape: &mut dyn FnMut(&ProductBench),
) -> Result<MatmulBench> {
    let device = Device::Cpu;
    let (mut products, mut others) = (Vec::new(), Vec::new());
    for shape in shapes {
        let a = Tensor::randn(0f32, 1.0, (shape.m, shape.k), &device)?;
        let w = Tensor::randn(0f32, 1.0, (shape.n, shape.k), &device)?;
        let b = w.t()?;
        let before = CpuSnapshot::take();
        let time = |precision: MatmulPrecision| -> Result<(f64, Tensor)> {
            with_matmul_precision(precision, || {
                let ms =
                    median_ms(&device, repeats, || crate::ops::mixed_matmul(&a, &b).map(drop).map_err(Into::into))?;
                Ok((ms, crate::ops::mixed_matmul(&a, &b)?))
            })
        };
        let (f32_ms, exact) = time(MatmulPrecision::F32)?;
        let (mixed_ms, mixed) = time(MatmulPrecision::Bf16Mixed)?;
        others.push(before.zip(CpuSnapshot::take()).and_then(|(a, b)| a.other_pct(&b)));
        let largest = |t: &Tensor| -> Result<f64> { Ok(t.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let flops = 2.0 * (shape.m * shape.k * shape.n) as f64;
        let bench = ProductBench {
            shape: shape.clone(),
            f32_ms,
            mixed_ms,
            gflops: [flops / f32_ms / 1e6, flops / mixed_ms / 1e6],
            max_rel_diff: largest(&(&mixed - &exact)?)? / largest(&exact)?,
        };
        on_shape(&bench);
        products.push(bench);
    }
    Ok(MatmulBench {
        mixed_runs_as: MatmulPrecision::Bf16Mixed.effective(),
        products,
        max_other_cpu_pct: others.into_iter().flatten().reduce(f64::max),
    })
}
