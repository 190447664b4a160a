//! Mixed precision for the products through a model's weights: bf16 products with f32 sums where
//! the CPU has AVX-512 BF16, f32 elsewhere.
//!
//! The setting belongs to the thread that runs the model (a training run installs it around its
//! steps), like PyTorch's `torch.autocast` region: tensors, master weights, optimizer state,
//! normalisation, softmax, attention and the adapters' own small products stay f32; only the
//! large products through a weight — base projections in forward and backward, the LM head's
//! logits and hidden-state gradient, a trained weight's own gradient — round their operands to
//! bf16. Two runs that share a process but not a thread do not see each other's setting.

use super::bf16_gemm;
use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// How products through a model's weights are computed on the thread that runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MatmulPrecision {
    /// Exact f32 products (the default).
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// bf16 products with f32 sums on CPUs with AVX-512 BF16; f32 products elsewhere.
    #[serde(rename = "bf16-mixed")]
    Bf16Mixed,
}

impl MatmulPrecision {
    /// The spelling of configs and flags (`f32`, `bf16-mixed`).
    pub fn name(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Bf16Mixed => "bf16-mixed",
        }
    }

    /// Parses [`MatmulPrecision::name`]'s spelling.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(MatmulPrecision::F32),
            "bf16-mixed" => Ok(MatmulPrecision::Bf16Mixed),
            other => Err(format!("unknown precision `{other}`: use f32 or bf16-mixed")),
        }
    }

    /// What this precision runs as on this machine: `bf16-mixed` only where the CPU kernel
    /// exists (benchmarks report it; a training run says so when it differs).
    pub fn effective(self) -> Self {
        match self {
            MatmulPrecision::Bf16Mixed if bf16_gemm::available() => MatmulPrecision::Bf16Mixed,
            _ => MatmulPrecision::F32,
        }
    }
}

thread_local! {
    static PRECISION: Cell<MatmulPrecision> = const { Cell::new(MatmulPrecision::F32) };
}

/// The precision set on this thread.
pub fn matmul_precision() -> MatmulPrecision {
    PRECISION.with(Cell::get)
}

/// Runs `f` with `precision` set on this thread, restoring the previous setting afterwards
/// (also when `f` panics).
pub fn with_matmul_precision<R>(precision: MatmulPrecision, f: impl FnOnce() -> R) -> R {
    struct Restore(MatmulPrecision);
    impl Drop for Restore {
        fn drop(&mut self) {
            PRECISION.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PRECISION.with(|p| p.replace(precision)));
    f()
}

/// Rows of the left operand below which the bf16 kernel does not pay for its packing (a decode
/// step's single row keeps the f32 matrix-vector path).
const MIN_ROWS: usize = 16;

/// `a [m, k] · b [k, n]` for a product through a model's weight: in bf16 products with f32 sums
/// when this thread asks for [`MatmulPrecision::Bf16Mixed`], both are f32 CPU tensors, `a` has
/// enough rows and the CPU has the kernel; candle's matmul otherwise. `b` may be a strided view
/// (a transposed weight) and is read in place.
pub(crate) fn mixed_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match mixed_product(a, b, None)? {
        Some(c) => Ok(c),
        None => a.matmul(b),
    }
}

/// `a · b + c` ([`mixed_matmul`] with `c [m, n]` added in the same pass over the output);
/// `a.matmul(b) + c` when the f32 product runs.
pub(crate) fn mixed_matmul_add(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    match mixed_product(a, b, Some(c))? {
        Some(c) => Ok(c),
        None => a.matmul(b)? + c,
    }
}

/// The bf16 product (plus `c`) when this thread asks for it and it applies, `None` otherwise.
fn mixed_product(a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> Result<Option<Tensor>> {
    let applies = |t: &Tensor| t.rank() == 2 && t.device().is_cpu() && t.dtype() == DType::F32;
    if matmul_precision() != MatmulPrecision::Bf16Mixed
        || !applies(a)
        || !applies(b)
        || !c.is_none_or(applies)
        || a.dim(0)? < MIN_ROWS
    {
        return Ok(None);
    }
    let ((m, k), (k2, n)) = (a.dims2()?, b.dims2()?);
    if k != k2 || c.is_some_and(|c| c.dims() != [m, n]) {
        return Ok(None);
    }
    let product = super::cpu::with_view(a, |av| {
        super::cpu::with_view(b, |bv| match c {
            Some(c) => super::cpu::with_slice::<f32, _>(c, |cv| bf16_gemm::gemm_bf16(av, bv, Some(cv))),
            None => Ok(bf16_gemm::gemm_bf16(av, bv, None)),
        })
    })???;
    product.map(|v| Tensor::from_vec(v, (m, n), a.device())).transpose()
}

/// `x [m, in] · wᵀ` for a weight `w [out, in]` that trains: under
/// [`MatmulPrecision::Bf16Mixed`] all three products (`y`, `dx = g w`, `dw = gᵀ x`) go through
/// the bf16 kernel where the CPU has it; otherwise candle's matmul and its own backward.
pub fn trained_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if matmul_precision() != MatmulPrecision::Bf16Mixed {
        return x.matmul(&w.t()?);
    }
    let value = mixed_matmul(&x.detach(), &w.detach().t()?)?;
    super::attach::attach2(
        "trained-linear",
        x,
        w,
        value,
        Box::new(|x, w, _, g| {
            let dx = mixed_matmul(g, w)?;
            let dw = mixed_matmul(&g.t()?, x)?;
            Ok((Some(dx), Some(dw)))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_setting_is_scoped_to_its_thread_and_restored() {
        assert_eq!(matmul_precision(), MatmulPrecision::F32);
        with_matmul_precision(MatmulPrecision::Bf16Mixed, || {
            assert_eq!(matmul_precision(), MatmulPrecision::Bf16Mixed);
            let other = std::thread::spawn(matmul_precision).join().unwrap();
            assert_eq!(other, MatmulPrecision::F32);
        });
        assert_eq!(matmul_precision(), MatmulPrecision::F32);
        for name in ["f32", "bf16-mixed"] {
            assert_eq!(MatmulPrecision::parse(name).unwrap().name(), name);
        }
        assert!(MatmulPrecision::parse("bf16").unwrap_err().contains("bf16-mixed"));
    }

    /// Through a transposed weight view, mixed products equal the f32 product of the operands
    /// rounded to bf16 (to f32 rounding of the sums), and differ from the exact f32 product by
    /// about bf16's precision; without the setting the product is candle's, bit for bit.
    #[test]
    fn mixed_products_round_the_operands_to_bf16() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (40, 70), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (33, 70), &dev)?;
        let c = Tensor::randn(0f32, 1.0, (40, 33), &dev)?;
        let exact = x.matmul(&w.t()?)?;
        assert_eq!(mixed_matmul(&x, &w.t()?)?.to_vec2::<f32>()?, exact.to_vec2::<f32>()?);
        assert_eq!(mixed_matmul_add(&x, &w.t()?, &c)?.to_vec2::<f32>()?, (&exact + &c)?.to_vec2::<f32>()?);
        let (mixed, mixed_plus_c) = with_matmul_precision(MatmulPrecision::Bf16Mixed, || -> Result<_> {
            Ok((mixed_matmul(&x, &w.t()?)?, mixed_matmul_add(&x, &w.t()?, &c)?))
        })?;
        if !bf16_gemm::available() {
            assert_eq!(mixed.to_vec2::<f32>()?, exact.to_vec2::<f32>()?);
            assert_eq!(mixed_plus_c.to_vec2::<f32>()?, (&exact + &c)?.to_vec2::<f32>()?);
            return Ok(());
        }
        let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
        let rounded = round(&x)?.matmul(&round(&w)?.t()?)?;
        let worst = |a: &Tensor, b: &Tensor| -> Result<f32> { (a - b)?.abs()?.max_all()?.to_scalar::<f32>() };
        assert!(worst(&mixed, &rounded)? < 1e-4, "{}", worst(&mixed, &rounded)?);
        let off = worst(&mixed, &exact)?;
        assert!(off > 1e-3 && off < 0.2, "bf16 operands move a 70-term sum of unit normals by {off}");
        assert!(worst(&mixed_plus_c, &(&mixed + &c)?)? < 1e-5, "the added matrix is added");
        Ok(())
    }
}
