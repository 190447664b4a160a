//! The read-back check of an export: the written file is loaded again and compared with what it
//! is meant to hold, on a fixed prompt.
//!
//! A GGUF export of type T (f32, f16, q8_0) is meant to hold the trained model's merged weights
//! rounded to T. The check rounds those weights itself, by ggml's definition of T and apart from
//! the quantizer that writes the file ([`round_as_stored`]), and then asks for two things: every
//! tensor read back from the file equals its rounded weight bit for bit (a wrong byte, block,
//! offset or q/k row order is named by tensor), and the file's logits equal the same forward on
//! the rounded weights ([`GGUF_TOLERANCE`]; the weights are identical, so the measured difference
//! is 0). The drift that rounding to f16 or q8_0 causes against the trained model is measured and
//! reported, not bounded: it is the type's price, not a fault of the file.

use crate::io::gguf::round_as_stored;
use crate::models::llama::weights::{hf_to_gguf_name, WeightSource};
use crate::models::llama::{Llama, LoadOptions};
use crate::models::load::load_causal_lm;
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The prompt every export is checked on.
pub const CHECK_PROMPT: &str = "The quick brown fox jumps over the lazy dog. Transfer learning means";

/// Largest |logit difference| allowed between a GGUF export and the forward on the trained
/// weights rounded to the export's type. Both forwards run on identical f32 weights, so any
/// difference is a fault; the bound only leaves room for summation order (measured: 0).
pub const GGUF_TOLERANCE: f32 = 1e-4;

/// Largest |logit difference| allowed between the trained model (base + adapter) and the same
/// model with the adapter merged into its weights (measured on a quick-start run: 1.4e-4).
pub const MERGE_TOLERANCE: f32 = 1e-3;

/// How close two models' logits are on the same prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogitAgreement {
    /// Largest |logit difference| over every position and vocabulary entry (NaN if either side
    /// has a NaN).
    pub max_abs_diff: f32,
    /// Share of positions whose most likely next token is the same.
    pub top1_agreement: f64,
}

impl LogitAgreement {
    /// Compares two `[.., positions, vocab]` logit tensors of the same shape.
    pub fn of(a: &Tensor, b: &Tensor) -> Result<Self> {
        let max_abs_diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let same = a.argmax(candle_core::D::Minus1)?.eq(&b.argmax(candle_core::D::Minus1)?)?;
        let top1_agreement = same.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?;
        Ok(Self { max_abs_diff, top1_agreement })
    }

    /// Whether the logits differ by at most `tolerance` and agree on every most likely token.
    pub fn within(&self, tolerance: f32) -> bool {
        self.max_abs_diff <= tolerance && self.top1_agreement == 1.0
    }
}

/// What a read-back check compared the export with, and how close it came.
#[derive(Debug, Clone, Serialize)]
pub struct ExportCheck {
    /// The model the export was compared with.
    pub reference: String,
    /// Largest |logit difference| from the reference on the check prompt.
    pub max_abs_logit_diff: f32,
    /// The largest difference the check allows.
    pub tolerance: f32,
    /// Largest |weight difference| between the file and the reference weights (GGUF exports
    /// only; anything but 0 fails the check).
    pub max_abs_weight_diff: Option<f32>,
}

/// Logits of `model` on the sequence `ids`, as f32 `[1, len, vocab]`.
pub fn logits(model: &Llama, ids: &[u32]) -> Result<Tensor> {
    let x = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    Ok(model.forward_infer(&x, &mut model.new_cache())?.to_dtype(DType::F32)?)
}

/// The error of a failed check: `subject` (the export, or the merged model) differs from
/// `reference` by more than `tolerance`, or its most likely token does somewhere.
pub fn mismatch(subject: impl std::fmt::Display, reference: &str, got: &LogitAgreement, tolerance: f32) -> GraftError {
    GraftError::ExportMismatch {
        path: subject.to_string().into(),
        reason: format!(
            "differs from {reference}: max |Δlogit| {} (allowed {tolerance}), most likely token agrees at \
             {:.1}% of the check prompt's positions (100% required)",
            got.max_abs_diff,
            got.top1_agreement * 100.0
        ),
    }
}

/// The tensor type a weight of rank `rank` gets in a GGUF export of type `dtype`: norm weights
/// (rank 1) stay f32, as llama.cpp keeps them.
pub fn gguf_tensor_type(rank: usize, dtype: GgmlDType) -> GgmlDType {
    if rank == 1 {
        GgmlDType::F32
    } else {
        dtype
    }
}

/// `model`'s weights, by Hugging Face name, rounded as a GGUF export of type `dtype` stores them.
pub fn gguf_rounded_weights(model: &Llama, dtype: GgmlDType) -> Result<HashMap<String, Tensor>> {
    model
        .named_tensors()?
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_device(&Device::Cpu)?;
            let rounded = round_as_stored(&name, &t, gguf_tensor_type(t.rank(), dtype))?;
            Ok((name, rounded))
        })
        .collect()
}

/// Weights held in memory by Hugging Face name.
struct InMemory {
    origin: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl WeightSource for InMemory {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn contains(&self, hf_name: &str) -> bool {
        self.tensors.contains_key(hf_name)
    }

    fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.tensors.get(hf_name).map(|t| t.dims().to_vec())
    }

    fn dense(&self, hf_name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self.tensors.get(hf_name).ok_or_else(|| {
            GraftError::model(&self.origin, format!("the reference weights have no tensor `{hf_name}`"))
        })?;
        Ok(t.to_device(device)?.to_dtype(dtype)?)
    }
}

/// Checks the GGUF file `path`, written from `merged` (the trained model with its adapter
/// merged) as type `dtype`: every tensor must read back as its weight rounded to `dtype`, bit
/// for bit, and the logits on `ids` must be within [`GGUF_TOLERANCE`] of the forward on the
/// rounded weights, with the same most likely token everywhere. Returns the file's logits and
/// the check's numbers; a failure is an error naming the tensor or the difference.
pub fn check_gguf(merged: &Llama, path: &Path, dtype: GgmlDType, ids: &[u32]) -> Result<(Tensor, ExportCheck)> {
    let reference = format!("the trained weights rounded to {}", type_name(dtype));
    let rounded = gguf_rounded_weights(merged, dtype)?;
    let back = load_causal_lm(&crate::assets::ModelSource::Gguf(path.to_path_buf()), &LoadOptions::default())?;
    let fail = |reason: String| GraftError::ExportMismatch { path: path.to_path_buf(), reason };
    let tensors = back.named_tensors()?;
    if tensors.len() != rounded.len() {
        return Err(fail(format!("{} tensors read back, the model has {}", tensors.len(), rounded.len())));
    }
    let mut max_weight = 0f32;
    for (name, t) in tensors {
        let gguf = || hf_to_gguf_name(&name).unwrap_or_else(|| name.clone());
        let want = rounded.get(&name).ok_or_else(|| fail(format!("tensor `{}` is not the model's", gguf())))?;
        if t.shape() != want.shape() {
            return Err(fail(format!("tensor `{}` has shape {:?}, expected {:?}", gguf(), t.dims(), want.dims())));
        }
        let diff = (&t.to_dtype(DType::F32)? - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        // Bit for bit: the file holds exactly the rounded weights (a NaN fails too).
        if diff != 0.0 {
            return Err(fail(format!("tensor `{}` differs from {reference} by up to {diff}", gguf())));
        }
        max_weight = max_weight.max(diff);
    }
    let back_logits = logits(&back, ids)?;
    drop(back);
    let cfg = merged.config().clone();
    let source = InMemory { origin: path.to_path_buf(), tensors: rounded };
    let reference_model = Llama::load(cfg, &source, &LoadOptions::default())?;
    let got = LogitAgreement::of(&logits(&reference_model, ids)?, &back_logits)?;
    if !got.within(GGUF_TOLERANCE) {
        return Err(mismatch(path.display(), &reference, &got, GGUF_TOLERANCE));
    }
    let check = ExportCheck {
        reference,
        max_abs_logit_diff: got.max_abs_diff,
        tolerance: GGUF_TOLERANCE,
        max_abs_weight_diff: Some(max_weight),
    };
    Ok((back_logits, check))
}

/// The `--gguf-type` name of a tensor type.
fn type_name(dtype: GgmlDType) -> String {
    match dtype {
        GgmlDType::F32 => "f32".into(),
        GgmlDType::F16 => "f16".into(),
        GgmlDType::Q8_0 => "q8_0".into(),
        other => format!("{other:?}"),
    }
}
