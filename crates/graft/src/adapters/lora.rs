//! LoRA: a trainable low-rank update beside a frozen projection.
//!
//! `y = W x + s · B (A · drop(x))` with `A: [r, in]`, `B: [out, r]` and `s = α / r` (or
//! `α / √r` with rsLoRA). The update is computed on activations — `x Aᵀ Bᵀ` — never as a dense
//! `ΔW`, so it costs `r·(in + out)` per token and works the same over dense and quantized bases.
//! Initialisation follows PEFT: `A` Kaiming-uniform (`U(-1/√in, 1/√in)`), `B` zeros, so a new
//! adapter leaves the model unchanged.

use super::targets;
use crate::models::linear::{BaseWeight, Proj, ProjAdapter};
use crate::models::llama::Llama;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The shape of a LoRA adapter: rank, scaling and where it attaches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank `r` of the update (> 0).
    pub r: usize,
    /// Scaling numerator α.
    pub alpha: f64,
    /// Dropout probability on the adapter's input during training.
    pub dropout: f64,
    /// rsLoRA scaling `α / √r` instead of `α / r`.
    pub rslora: bool,
    /// PEFT-style module patterns (`q_proj`, `layers.1*.mlp.*`).
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// The factor `s` applied to `B A x`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Checks rank, alpha and dropout are usable.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(GraftError::Input("adapter.r must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(GraftError::Input(format!("adapter.alpha must be positive, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(GraftError::Input(format!("adapter.dropout must be in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }
}

/// The state every adapter of one [`LoraSet`] shares: the switch and counter that make dropout
/// masks a pure function of `(seed, module, step)` (so a resumed run draws exactly the masks the
/// original would have), and whether the set is parked (left out of forward passes while another
/// set of a per-task bank serves).
#[derive(Debug, Default)]
pub struct DropoutClock {
    training: AtomicBool,
    step: AtomicU64,
    parked: AtomicBool,
}

impl DropoutClock {
    /// Puts the set in use (`true`, the default) or parks it (`false`): a parked set's adapters
    /// act as if detached.
    pub fn set_active(&self, on: bool) {
        self.parked.store(!on, Ordering::Relaxed);
    }

    /// Turns dropout on (training) or off (evaluation).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// Sets the micro-step whose masks are drawn next.
    pub fn set_step(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed);
    }
}

/// One LoRA adapter on one projection.
#[derive(Debug)]
pub struct LoraLayer {
    name: String,
    a: Var,
    b: Var,
    scale: f64,
    dropout: f64,
    seed: u64,
    clock: Arc<DropoutClock>,
}

impl LoraLayer {
    /// An adapter with the given factors (`a: [r, in]`, `b: [out, r]`).
    pub fn from_tensors(
        name: &str,
        a: &Tensor,
        b: &Tensor,
        scale: f64,
        dropout: f64,
        clock: Arc<DropoutClock>,
    ) -> Result<Self> {
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| (h ^ c as u64).wrapping_mul(0x100_0000_01b3));
        Ok(Self { name: name.into(), a: Var::from_tensor(a)?, b: Var::from_tensor(b)?, scale, dropout, seed, clock })
    }

    /// PEFT's initialisation for a projection with `dims = (out, in)`, drawn from `rng`.
    pub fn init(
        name: &str,
        dims: (usize, usize),
        spec: &LoraSpec,
        dtype: DType,
        device: &candle_core::Device,
        rng: &mut ChaCha8Rng,
        clock: Arc<DropoutClock>,
    ) -> Result<Self> {
        let (out, inp) = dims;
        let bound = 1.0 / (inp as f64).sqrt();
        let a: Vec<f64> = (0..spec.r * inp).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_vec(a, (spec.r, inp), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out, spec.r), dtype, device)?;
        Self::from_tensors(name, &a, &b, spec.scale(), spec.dropout, clock)
    }

    /// The projection this adapter is attached to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The down-projection `A` `[r, in]`.
    pub fn a(&self) -> &Var {
        &self.a
    }

    /// The up-projection `B` `[out, r]`.
    pub fn b(&self) -> &Var {
        &self.b
    }

    /// The scaling factor `s`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The dense update `ΔW = s · B A` `[out, in]` (for merging; never used per step).
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }

    /// This step's dropout mask for an input shaped like `x`, drawn from (seed, step), or
    /// `None` when dropout is off (rate 0, or evaluation).
    fn dropout_for(&self, x: &Tensor) -> Result<Option<crate::ops::InputDropout>> {
        if self.dropout == 0.0 || !self.clock.training.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let step = self.clock.step.load(Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // One sequence of a batch run a sequence at a time draws what the whole batch draws at its
        // place: every draw is one u64, two words of the stream.
        if let Some((index, _)) = crate::ops::batch_slice() {
            rng.set_word_pos(2 * (index * x.elem_count()) as u128);
        }
        let keep = 1.0 - self.dropout;
        let mask: Vec<u8> = (0..x.elem_count()).map(|_| u8::from(rng.random::<f64>() < keep)).collect();
        let keep_mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok(Some(crate::ops::InputDropout { keep_mask, keep }))
    }

    fn drop_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.dropout_for(x)? {
            Some(d) => d.apply(x)?,
            None => x.clone(),
        })
    }
}

impl ProjAdapter for LoraLayer {
    fn apply(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let x = self.drop_input(x)?;
        let a = self.a.as_tensor().to_dtype(x.dtype())?;
        let b = self.b.as_tensor().to_dtype(x.dtype())?;
        // Rows flattened so each product is one 2-D matmul; the scale is applied to the rank-r
        // intermediate, the smallest tensor on the path.
        let (inp, out) = (a.dim(1)?, b.dim(0)?);
        let rows = x.elem_count() / inp;
        let down = (x.reshape((rows, inp))?.matmul(&a.t()?)? * self.scale)?;
        let delta = down.matmul(&b.t()?)?.reshape(y.shape())?;
        debug_assert_eq!(y.dim(candle_core::D::Minus1)?, out);
        Ok((y + delta)?)
    }

    fn delta_weight(&self) -> Result<Option<Tensor>> {
        Ok(Some(LoraLayer::delta_weight(self)?))
    }

    fn trainable_tensors(&self) -> Vec<Tensor> {
        vec![self.a.as_tensor().clone(), self.b.as_tensor().clone()]
    }

    fn is_active(&self) -> bool {
        !self.clock.parked.load(Ordering::Relaxed)
    }

    fn low_rank(&self) -> Option<(Tensor, Tensor, f64)> {
        Some((self.a.as_tensor().clone(), self.b.as_tensor().clone(), self.scale))
    }

    fn input_dropout(&self, x: &Tensor) -> Result<Option<crate::ops::InputDropout>> {
        self.dropout_for(x)
    }
}

/// The adapters attached to a model by one [`LoraSpec`], in model order.
#[derive(Debug)]
pub struct LoraSet {
    /// The spec they were built from.
    pub spec: LoraSpec,
    /// One adapter per selected projection.
    pub layers: Vec<Arc<LoraLayer>>,
    /// Dropout on/off and step, shared by every layer.
    pub clock: Arc<DropoutClock>,
}

impl LoraSet {
    /// Every trainable variable with its graft name (`{module}.lora_A` / `.lora_B`).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .flat_map(|l| [(format!("{}.lora_A", l.name), l.a.clone()), (format!("{}.lora_B", l.name), l.b.clone())])
            .collect()
    }
}

/// One adapter equal to the sum of `sets` (each covering the same projections, in the same
/// order): per projection the factors are stacked along the rank, `A = [A₁; A₂; …]`,
/// `B = [s₁B₁, s₂B₂, …]`, with `α = r` (scale 1, plain LoRA scaling), so `s B A x` is exactly
/// `Σ sᵢ Bᵢ Aᵢ x` up to float rounding. A shared adapter and a task's own one become a single
/// PEFT adapter any tool loads. The result is not attached to a model.
pub fn concat(sets: &[&LoraSet]) -> Result<LoraSet> {
    let first = sets.first().ok_or_else(|| GraftError::Input("no LoRA set to concatenate".into()))?;
    let names: Vec<&str> = first.layers.iter().map(|l| l.name()).collect();
    for set in sets {
        let other: Vec<&str> = set.layers.iter().map(|l| l.name()).collect();
        if other != names {
            return Err(GraftError::Input(format!(
                "LoRA sets over different projections cannot be added: {} vs {} adapted projections",
                names.len(),
                other.len()
            )));
        }
    }
    let clock = Arc::new(DropoutClock::default());
    let mut layers = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let a: Vec<Tensor> = sets.iter().map(|s| s.layers[i].a().as_tensor().clone()).collect();
        let b: Vec<Tensor> =
            sets.iter().map(|s| Ok((s.layers[i].b().as_tensor() * s.layers[i].scale())?)).collect::<Result<_>>()?;
        let (a, b) = (Tensor::cat(&a, 0)?, Tensor::cat(&b, 1)?);
        layers.push(Arc::new(LoraLayer::from_tensors(name, &a, &b, 1.0, first.spec.dropout, clock.clone())?));
    }
    let r: usize = sets.iter().map(|s| s.spec.r).sum();
    let spec = LoraSpec {
        r,
        alpha: r as f64,
        dropout: first.spec.dropout,
        rslora: false,
        targets: first.spec.targets.clone(),
    };
    Ok(LoraSet { spec, layers, clock })
}

/// A network with named adaptable projections: what LoRA attaches to, merges into and detaches
/// from (the Llama family, Whisper).
pub trait Adaptable {
    /// Every adaptable projection, in model order.
    fn projections_mut(&mut self) -> Vec<&mut Proj>;
    /// Where the weights live.
    fn weights_device(&self) -> candle_core::Device;
    /// The compute dtype of the weights.
    fn weights_dtype(&self) -> DType;
}

impl Adaptable for Llama {
    fn projections_mut(&mut self) -> Vec<&mut Proj> {
        Llama::projections_mut(self)
    }
    fn weights_device(&self) -> candle_core::Device {
        crate::models::Model::device(self).clone()
    }
    fn weights_dtype(&self) -> DType {
        crate::models::Model::dtype(self)
    }
}

impl Adaptable for crate::models::whisper::Whisper {
    fn projections_mut(&mut self) -> Vec<&mut Proj> {
        crate::models::whisper::Whisper::projections_mut(self)
    }
    fn weights_device(&self) -> candle_core::Device {
        self.device().clone()
    }
    fn weights_dtype(&self) -> DType {
        self.dtype()
    }
}

/// Attaches LoRA adapters to the projections of `model` selected by `spec.targets`; `make`
/// builds each adapter from its projection name and `(out, in)` dims.
pub fn attach_with<M: Adaptable + ?Sized>(
    model: &mut M,
    spec: &LoraSpec,
    mut make: impl FnMut(&str, (usize, usize), Arc<DropoutClock>) -> Result<LoraLayer>,
) -> Result<LoraSet> {
    spec.validate()?;
    let names: Vec<String> = model.projections_mut().iter().map(|p| p.name().to_string()).collect();
    let chosen: Vec<String> =
        targets::select(&spec.targets, &names).map_err(GraftError::Input)?.into_iter().cloned().collect();
    let clock = Arc::new(DropoutClock::default());
    let mut layers = Vec::with_capacity(chosen.len());
    for proj in model.projections_mut() {
        if chosen.iter().any(|c| c == proj.name()) {
            let layer = Arc::new(make(proj.name(), proj.dims(), clock.clone())?);
            proj.attach(layer.clone());
            layers.push(layer);
        }
    }
    Ok(LoraSet { spec: spec.clone(), layers, clock })
}

/// Attaches freshly initialised (PEFT-style) LoRA adapters, drawing `A` from a ChaCha stream
/// seeded with `seed`.
///
/// The factors are kept in [`master_dtype`] of the model's dtype: with a bf16 / f16 model they
/// are f32 master weights, cast to the compute dtype in each forward (mixed precision: small
/// updates are not rounded away, and the optimizer state is f32).
pub fn attach<M: Adaptable + ?Sized>(model: &mut M, spec: &LoraSpec, seed: u64) -> Result<LoraSet> {
    let dtype = master_dtype(model.weights_dtype());
    let device = model.weights_device();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    attach_with(model, spec, |name, dims, clock| LoraLayer::init(name, dims, spec, dtype, &device, &mut rng, clock))
}

/// The dtype trainable adapter weights are stored in for a model computing in `compute`: f32 for
/// the half-precision types, `compute` otherwise.
pub fn master_dtype(compute: DType) -> DType {
    match compute {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// Folds every adapter attached to a projection of `model` into its base weight
/// (`W ← W + s·B A`) and detaches them, leaving a plain model whose outputs equal the adapted
/// one's (prompt adapters, which are not projections', stay as they are).
pub fn merge<M: Adaptable + ?Sized>(model: &mut M) -> Result<()> {
    let dtype = model.weights_dtype();
    for proj in model.projections_mut() {
        if proj.has_adapters() {
            let merged = proj.effective_weight(dtype)?;
            proj.detach_all();
            proj.set_base(BaseWeight::Dense(merged))?;
        }
    }
    Ok(())
}

/// Removes every adapter from the model without changing base weights.
pub fn unload<M: Adaptable + ?Sized>(model: &mut M) {
    model.projections_mut().into_iter().for_each(Proj::detach_all);
}
