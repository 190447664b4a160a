//! Building the pieces a fine-tuning run needs from its config: model, tokenizer, trainable
//! parameters, update rule; and the held-out loss.

use super::from_run::{finished_run, EarlierRun};
use crate::adapters::lora::{self, LoraSet, LoraSpec};
use crate::adapters::prompt::{self, PromptAdapter};
use crate::adapters::targets;
use crate::assets::{resolve_model, ModelSource};
use crate::config::{AdapterKind, FromRunAdapter, ModelInit, OptimizerName, TrainConfig};
use crate::data::Batch;
use crate::device::{parse_device, parse_dtype};
use crate::models::llama::{Llama, LoadOptions, Pass, WeightFormat};
use crate::models::load::{load_causal_lm_expanding, load_causal_lm_keeping, load_causal_lm_random};
use crate::tokenizer::Tokenizer;
use crate::train::optim::{AdamWConfig, OptimizerKind};
use crate::{GraftError, Result};
use candle_core::{DType, Var};

pub use crate::objectives::causal_lm::causal_lm_loss;

/// The model being trained and what of it trains.
pub struct TrainableModel {
    /// The model (adapters attached).
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it came from.
    pub source: ModelSource,
    /// LoRA adapters, when the run trains LoRA / QLoRA.
    pub lora: Option<LoraSet>,
    /// The soft prompt or prefix, when the run trains prompt / prefix tuning.
    pub prompt: Option<PromptAdapter>,
    /// Every trainable variable, by name (LoRA factor names, `prompt_embeddings` or HF weight
    /// names).
    pub vars: Vec<(String, Var)>,
}

/// Loads the model of `cfg` and makes the configured part of it trainable.
pub fn build_model(cfg: &TrainConfig) -> Result<TrainableModel> {
    // A later stage (`model.from_run`) starts from what the earlier run trained.
    let earlier = cfg.model.from_run.as_deref().map(finished_run).transpose()?;
    let (name, init, keep) = match &earlier {
        None => (cfg.model.name.clone(), cfg.model.init, cfg.model.keep_layers.clone()),
        Some(EarlierRun::Model(dir)) => (dir.to_string_lossy().into_owned(), ModelInit::Pretrained, None),
        Some(EarlierRun::Lora { model, .. }) => (model.name.clone(), ModelInit::Pretrained, model.keep_layers.clone()),
    };
    // Block expansion grows the named model of a first stage (the config refuses it otherwise).
    let expand = cfg.model.expand_blocks.filter(|_| earlier.is_none());
    let source = resolve_model(&name, false)?;
    let tokenizer = Tokenizer::from_source(&source)?;
    let format = if cfg.adapter.kind == AdapterKind::Qlora { WeightFormat::Quantized } else { WeightFormat::Dense };
    let opts = LoadOptions { device: parse_device(&cfg.model.device)?, dtype: parse_dtype(&cfg.model.dtype)?, format };
    let mut model = match (init, expand) {
        (ModelInit::Pretrained, Some(n)) => load_causal_lm_expanding(&source, &opts, n)?,
        (ModelInit::Pretrained, None) => load_causal_lm_keeping(&source, &opts, keep.as_ref())?,
        (ModelInit::Random, _) => load_causal_lm_random(&source, &opts, cfg.train.seed, keep.as_ref())?,
    };
    let kept = match &earlier {
        Some(EarlierRun::Lora { model: base, adapter }) => {
            let set = crate::io::peft::load_lora(adapter, &mut model)?;
            if cfg.model.from_run_adapter == FromRunAdapter::Merge {
                lora::merge(&mut model)?;
                None
            } else if base.name != cfg.model.name {
                return Err(GraftError::Input(format!(
                    "model.from_run_adapter = \"keep\" continues an adapter of {}: set model.name to it (it is \
                     written as the adapter's base), not {}",
                    base.name, cfg.model.name
                )));
            } else {
                Some(set)
            }
        }
        _ => None,
    };
    if cfg.adapter.kind == AdapterKind::Qlora && !model.has_quantized() {
        return Err(GraftError::Input(format!(
            "adapter.kind = \"qlora\" trains over a quantized base, but {} holds no quantized projections \
             (graft does not quantize on load): use a GGUF with quantized weights, such as the default model, \
             or adapter.kind = \"lora\"",
            cfg.model.name
        )));
    }
    model.set_gradient_checkpointing(cfg.train.gradient_checkpointing);
    model.set_checkpoint_mode(cfg.train.checkpoint_mode);
    let a = &cfg.adapter;
    if let Some(spec) = a.prompt_spec() {
        let adapter = prompt::attach(&mut model, &spec, &tokenizer, cfg.train.seed)?;
        let vars = adapter.named_vars();
        return Ok(TrainableModel { model, tokenizer, source, lora: None, prompt: Some(adapter), vars });
    }
    let (lora, vars) = match a.kind {
        AdapterKind::Lora | AdapterKind::Qlora if kept.is_some() => {
            let vars = kept.as_ref().map(LoraSet::named_vars).unwrap_or_default();
            (kept, vars)
        }
        AdapterKind::Lora | AdapterKind::Qlora => {
            let spec =
                LoraSpec { r: a.r, alpha: a.alpha, dropout: a.dropout, rslora: a.rslora, targets: a.targets.clone() };
            let set = lora::attach(&mut model, &spec, cfg.train.seed)?;
            let vars = set.named_vars();
            (Some(set), vars)
        }
        AdapterKind::None => (None, model.make_trainable(|_| true)?),
        AdapterKind::Freeze => {
            let select = |name: &str| {
                let module = name.trim_start_matches("model.").trim_end_matches(".weight");
                a.targets.iter().any(|p| targets::matches(p, module) || targets::matches(p, name))
            };
            let vars = model.make_trainable(select)?;
            if vars.is_empty() {
                return Err(GraftError::Input(format!(
                    "adapter.targets {:?} matched no weight; names look like `layers.0.self_attn.q_proj` or `model.norm.weight`",
                    a.targets
                )));
            }
            (None, vars)
        }
        AdapterKind::Expanded => {
            let Some(plan) = model.expansion().cloned() else {
                return Err(GraftError::Input(
                    "adapter.kind = \"expanded\" trains the blocks model.expand_blocks adds: set model.expand_blocks"
                        .into(),
                ));
            };
            let norms = a.expanded_norms;
            (None, model.make_trainable(|name| plan.is_new_tensor(name) || (norms && name.ends_with("norm.weight")))?)
        }
        AdapterKind::PromptTuning | AdapterKind::PrefixTuning => {
            return Err(GraftError::Input(format!("adapter.kind {:?} has no prompt settings", a.kind)));
        }
    };
    Ok(TrainableModel { model, tokenizer, source, lora, prompt: None, vars })
}

/// The tokenizer of the model `cfg` trains (`model.name`, or the model of `model.from_run`'s
/// run), without loading the model.
pub(crate) fn run_tokenizer(cfg: &TrainConfig) -> Result<Tokenizer> {
    let name = match cfg.model.from_run.as_deref().map(finished_run).transpose()? {
        None => cfg.model.name.clone(),
        Some(EarlierRun::Model(dir)) => dir.to_string_lossy().into_owned(),
        Some(EarlierRun::Lora { model, .. }) => model.name,
    };
    Tokenizer::from_source(&resolve_model(&name, false)?)
}

/// The loop settings of a config's `[train]` section for a run of `micro_batches_per_epoch`
/// micro-batches an epoch: `max_steps`, or enough optimizer steps for `epochs` epochs.
pub fn loop_settings(t: &crate::config::TrainSection, micro_batches_per_epoch: u64) -> crate::train::LoopSettings {
    let grad_accum = t.grad_accum as u64;
    let total_steps = t.max_steps.unwrap_or_else(|| (t.epochs * micro_batches_per_epoch).div_ceil(grad_accum));
    crate::train::LoopSettings {
        total_steps,
        grad_accum,
        max_grad_norm: t.max_grad_norm,
        schedule: crate::train::schedule::Schedule {
            kind: t.schedule,
            peak: t.lr,
            warmup: t.warmup_steps,
            total: total_steps,
        },
        eval_every: t.eval_every,
        pcgrad: None,
        precision: t.precision,
    }
}

/// The update rule of a config's `[train]` section.
pub fn optimizer_kind(t: &crate::config::TrainSection) -> OptimizerKind {
    match t.optimizer {
        OptimizerName::Adamw => OptimizerKind::AdamW(AdamWConfig {
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
        }),
        OptimizerName::Sgd => OptimizerKind::Sgd { momentum: t.momentum, weight_decay: t.weight_decay },
    }
}

/// Mean loss per supervised token over `batches` (no gradients kept).
pub fn eval_loss(model: &Llama, batches: &[Batch]) -> Result<f64> {
    let (mut total, mut count) = (0f64, 0usize);
    // The inference kernels are faster for dense weights; candle's quantized matmul is not, so
    // a quantized base is evaluated through the training ops (which dequantize per product).
    let pass = if model.has_quantized() { Pass::Train } else { Pass::Infer };
    for b in batches {
        let nll = model.token_nll(&b.ids, &b.targets, &b.mask, pass)?;
        total += nll.sum_all()?.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        count += b.n_targets;
    }
    if count == 0 {
        return Err(GraftError::Input("the evaluation set has no supervised tokens".into()));
    }
    Ok(total / count as f64)
}
