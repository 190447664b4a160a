//! Joining a forward value computed outside the graph to its inputs with a custom backward.
//!
//! candle records a custom op's backward only for values the op itself produced from storage.
//! [`Attached1`] / [`Attached2`] let an op compute its forward with ordinary (fused, detached)
//! tensor functions, then hand that value over as the op's output: the value is taken out of the
//! op on first use and copied once into the output storage, so the graph holds the inputs and the
//! output but no second copy of the output.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};
use std::sync::Mutex;

/// Gradient of one input given `(input, output, output gradient)`.
pub type Backward1 = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Option<Tensor>> + Send + Sync>;

/// Gradients of two inputs given `(input 1, input 2, output, output gradient)`.
pub type Backward2 = Box<
    dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync,
>;

/// Gradients of three inputs given `(input 1, input 2, input 3, output, output gradient)`.
pub type Backward3 = Box<
    dyn Fn(
            &Tensor,
            &Tensor,
            &Tensor,
            &Tensor,
            &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>
        + Send
        + Sync,
>;

/// A one-input op whose forward value is already computed.
pub struct Attached1 {
    name: &'static str,
    value: Mutex<Option<Tensor>>,
    backward: Backward1,
}

/// A two-input op whose forward value is already computed.
pub struct Attached2 {
    name: &'static str,
    value: Mutex<Option<Tensor>>,
    backward: Backward2,
}

/// A three-input op whose forward value is already computed.
pub struct Attached3 {
    name: &'static str,
    value: Mutex<Option<Tensor>>,
    backward: Backward3,
}

/// Returns `value` as the output of a graph node over `a`, `b` and `c` whose backward is
/// `backward`.
pub fn attach3(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    value: Tensor,
    backward: Backward3,
) -> candle_core::Result<Tensor> {
    a.apply_op3(b, c, Attached3 { name, value: Mutex::new(Some(value)), backward })
}

/// Returns `value` as the output of a graph node over `input` whose backward is `backward`.
pub fn attach1(name: &'static str, input: &Tensor, value: Tensor, backward: Backward1) -> candle_core::Result<Tensor> {
    input.apply_op1(Attached1 { name, value: Mutex::new(Some(value)), backward })
}

/// Returns `value` as the output of a graph node over `a` and `b` whose backward is `backward`.
pub fn attach2(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    value: Tensor,
    backward: Backward2,
) -> candle_core::Result<Tensor> {
    a.apply_op2(b, Attached2 { name, value: Mutex::new(Some(value)), backward })
}

/// Takes the stored value out and copies it into fresh storage of the backend `S`.
fn take_value<S>(
    slot: &Mutex<Option<Tensor>>,
    name: &str,
    pick: impl Fn(&Storage) -> Option<&S>,
) -> candle_core::Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let value = slot
        .lock()
        .map_err(|_| candle_core::Error::Msg(format!("{name}: poisoned value slot")))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: forward value already used")))?;
    let (storage, layout) = value.storage_and_layout();
    let storage = pick(&storage).ok_or_else(|| candle_core::Error::Msg(format!("{name}: value on another device")))?;
    // SAFETY: `copy_strided_src` writes every element of the new storage before it is read.
    let mut out = unsafe { storage.device().alloc_uninit(layout.shape(), storage.dtype())? };
    storage.copy_strided_src(&mut out, 0, layout)?;
    Ok((out, layout.shape().clone()))
}

fn cpu(s: &Storage) -> Option<&CpuStorage> {
    match s {
        Storage::Cpu(c) => Some(c),
        _ => None,
    }
}

fn cuda(s: &Storage) -> Option<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Some(c),
        _ => None,
    }
}

impl CustomOp1 for Attached1 {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        take_value(&self.value, self.name, cpu)
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        take_value(&self.value, self.name, cuda)
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        (self.backward)(&arg.detach(), &res.detach(), grad)
    }
}

impl CustomOp2 for Attached2 {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        take_value(&self.value, self.name, cpu)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        take_value(&self.value, self.name, cuda)
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        (self.backward)(&a.detach(), &b.detach(), &res.detach(), grad)
    }
}

impl CustomOp3 for Attached3 {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        take_value(&self.value, self.name, cpu)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        take_value(&self.value, self.name, cuda)
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        (self.backward)(&a.detach(), &b.detach(), &c.detach(), &res.detach(), grad)
    }
}
