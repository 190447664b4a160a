//! AdamW's update of one variable, in place in its own memory.
//!
//! Written with tensor ops, one update allocates a dozen variable-sized temporaries (each moment
//! scaled, the squared gradient, the square root, the quotient, the next value) and reads and
//! writes memory a dozen times; for full fine-tuning of SmolLM2 that is the 113 MB embedding
//! table several times over at the step's peak. Here three passes update the first moment, the
//! second moment and the variable where they lie, with no temporaries. Each pass computes the
//! same floating-point operations in the same order as the tensor form, so both give the same
//! bits (tests/optim.rs holds them to that).

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel task.
const TASK: usize = 1 << 16;

/// The constants of one AdamW update of one variable.
#[derive(Debug, Clone, Copy)]
pub struct AdamWUpdate {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// This variable's learning rate.
    pub lr: f64,
    /// Decoupled weight decay (0 for none).
    pub weight_decay: f64,
    /// The variable's update count (1 for its first), for the bias corrections.
    pub t: i32,
}

/// Updates `p`, its first moment `m` and second moment `v` in place with gradient `g`, when all
/// four are contiguous CPU tensors of one shape and of the same dtype, `f32` or `f64`; returns
/// whether it did (otherwise the caller takes the tensor form). `m` and `v` must not share memory
/// with any tensor other than the optimizer's own.
pub fn adamw_in_place(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, u: &AdamWUpdate) -> candle_core::Result<bool> {
    let ts = [p, m, v, g];
    let applies = ts.iter().all(|t| {
        t.device().is_cpu()
            && t.dtype() == p.dtype()
            && matches!(t.dtype(), DType::F32 | DType::F64)
            && t.is_contiguous()
            && t.dims() == p.dims()
    });
    if !applies {
        return Ok(false);
    }
    m.inplace_op2(g, &Moment { decay: u.beta1, square: false })?;
    v.inplace_op2(g, &Moment { decay: u.beta2, square: true })?;
    p.inplace_op3(m, v, &Apply(*u))?;
    Ok(true)
}

/// `x ← x·decay + g·(1 − decay)`, or with `square`, `x ← x·decay + g²·(1 − decay)`.
struct Moment {
    decay: f64,
    square: bool,
}

/// `p ← p·(1 − lr·wd) − (m / (√v · (1/√bc2) + eps)) · (lr/bc1)` (the decay step only when `wd` is
/// not 0).
struct Apply(AdamWUpdate);

/// The contiguous values of `s` under layout `l`.
fn values<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("adamw: not contiguous".into()))?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// The contiguous values of `s` under layout `l`, writable.
fn values_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<Slot<'a>> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("adamw: not contiguous".into()))?;
    Ok(match s {
        CpuStorage::F32(x) => Slot::F32(&mut x[a..b]),
        CpuStorage::F64(x) => Slot::F64(&mut x[a..b]),
        _ => candle_core::bail!("adamw: values of a dtype other than f32 or f64"),
    })
}

/// A writable slice of one of the two element types.
enum Slot<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

impl Moment {
    fn run<T: WithDType + Send + Sync>(&self, x: &mut [T], g: &[T]) {
        let (zero, k, c) = (T::from_f64(0.0), T::from_f64(self.decay), T::from_f64(1.0 - self.decay));
        let square = self.square;
        x.par_chunks_mut(TASK).zip(g.par_chunks(TASK)).for_each(|(x, g)| {
            for (x, &g) in x.iter_mut().zip(g) {
                let g = if square { g * g } else { g };
                // `+ zero` as the tensor form's affine map adds it (it turns −0 into +0).
                *x = (*x * k + zero) + (g * c + zero);
            }
        });
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        match values_mut(s1, l1)? {
            Slot::F32(x) => self.run(x, values::<f32>(s2, l2)?),
            Slot::F64(x) => self.run(x, values::<f64>(s2, l2)?),
        }
        Ok(())
    }
}

/// `f64::sqrt` / `f32::sqrt` for the two element types.
trait Sqrt {
    fn square_root(self) -> Self;
}
impl Sqrt for f32 {
    fn square_root(self) -> Self {
        self.sqrt()
    }
}
impl Sqrt for f64 {
    fn square_root(self) -> Self {
        self.sqrt()
    }
}

impl Apply {
    fn run<T: WithDType + Sqrt + Send + Sync>(&self, p: &mut [T], m: &[T], v: &[T]) {
        let u = self.0;
        let bc1 = 1.0 - u.beta1.powi(u.t);
        let bc2 = 1.0 - u.beta2.powi(u.t);
        let zero = T::from_f64(0.0);
        let (r, one, eps) = (T::from_f64(1.0 / bc2.sqrt()), T::from_f64(1.0), T::from_f64(u.eps));
        let (decay, step) = (T::from_f64(1.0 - u.lr * u.weight_decay), T::from_f64(u.lr / bc1));
        let decays = u.weight_decay != 0.0;
        p.par_chunks_mut(TASK).zip(m.par_chunks(TASK).zip(v.par_chunks(TASK))).for_each(|(p, (m, v))| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                let denom = (v.square_root() * r + zero) * one + eps;
                let next = if decays { *p * decay + zero } else { *p };
                *p = next - ((m / denom) * step + zero);
            }
        });
    }
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        match values_mut(s1, l1)? {
            Slot::F32(p) => self.run(p, values::<f32>(s2, l2)?, values::<f32>(s3, l3)?),
            Slot::F64(p) => self.run(p, values::<f64>(s2, l2)?, values::<f64>(s3, l3)?),
        }
        Ok(())
    }
}
