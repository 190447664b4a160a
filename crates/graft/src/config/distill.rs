//! The distillation configuration file (`graft distill CONFIG.toml`): the `graft train` sections
//! for the student (`[model]`, `[adapter]`, `[data]`, `[train]`, `[output]`, the same keys) plus
//! `[teacher]` and `[distill]`. Unknown keys are errors, as everywhere.

use super::{read_toml, AdapterSection, DataSection, ModelSection, OutputSection, TrainConfig, TrainSection};
use crate::generate::SamplingConfig;
use crate::ops::{Divergence, KdSpec};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole distillation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The student model (as `graft train`'s `[model]`).
    pub model: ModelSection,
    /// How the student is adapted (as `graft train`'s `[adapter]`).
    pub adapter: AdapterSection,
    /// Training and evaluation data (token ids are shared by teacher and student; with
    /// `distill.loss = "uld"` each example is also rendered with the teacher's tokenizer).
    pub data: DataSection,
    /// Optimisation.
    pub train: TrainSection,
    /// Where results go.
    pub output: OutputSection,
    /// The teacher.
    pub teacher: TeacherSection,
    /// The distillation loss.
    pub distill: DistillSection,
}

/// `[teacher]`: a frozen model run without gradients through the inference path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherSection {
    /// Asset name, `.gguf` file or Hugging Face folder (required). It must share the student's
    /// tokenizer, except with `distill.loss = "uld"`.
    pub model: String,
    /// A LoRA adapter attached to the teacher: a PEFT folder, a llama.cpp LoRA GGUF, or a
    /// `graft train` run directory (its `adapter/`). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// Compute precision of the teacher: `f32`, `bf16`, `f16` or `f64`. Default: the student's
    /// `model.dtype`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Keep a GGUF teacher's quantized weights as they are (candle's quantized matmul) instead of
    /// dequantizing them on load: less memory, the teacher never needs gradients. Default false.
    pub quantized: bool,
}

/// The divergence of `[distill] loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossName {
    /// `KL(teacher‖student)`.
    #[default]
    ForwardKl,
    /// `KL(student‖teacher)`.
    ReverseKl,
    /// Generalized Jensen–Shannon divergence with `beta` (TRL's GKD).
    Jsd,
    /// Skew KL with `alpha` (DistiLLM).
    SkewKl,
    /// Skew reverse KL with `alpha` (DistiLLM).
    SkewReverseKl,
    /// Universal Logit Distillation (Boizard et al. 2024) with `uld_top_k`: the L1 distance of
    /// the two distributions sorted; teacher and student may have different tokenizers.
    Uld,
}

/// `[distill] uld_top_k` when the config does not give it.
pub const DEFAULT_ULD_TOP_K: usize = 64;

/// `[distill] on_policy_max_new_tokens` when the config does not give it.
pub const DEFAULT_ON_POLICY_MAX_NEW_TOKENS: usize = 32;

/// `[distill]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    /// `forward_kl` | `reverse_kl` | `jsd` | `skew_kl` | `skew_reverse_kl` | `uld`
    /// (docs/distillation.md gives each formula; `uld` works across tokenizers). Default
    /// `forward_kl`.
    pub loss: LossName,
    /// Share of the distillation term: `loss = (1 − kd_ratio) · cross-entropy + kd_ratio · KD`,
    /// in [0, 1]. Default 0.5.
    pub kd_ratio: f64,
    /// Temperature applied to teacher and student logits; the KD term is multiplied by its
    /// square. Default 1.
    pub temperature: f64,
    /// `jsd` only: weight of the teacher in the mixture `β p + (1 − β) q`, in [0, 1]; 0 is
    /// forward KL, 1 reverse KL (as TRL defines them). Default 0.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// `skew_kl` / `skew_reverse_kl` only: the skew α in [0, 1); 0 is the plain KL. Default 0.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// `uld` only: how many of the largest probabilities of each distribution the ULD distance
    /// compares (≥ 1; at least the larger vocabulary is the paper's whole-vocabulary loss).
    /// Default 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uld_top_k: Option<usize>,
    /// Hidden-state distillation: `[teacher_layer, student_layer]` pairs, a layer `L` being the
    /// residual stream after `L` decoder blocks (Hugging Face's `hidden_states[L]`, from 1 to
    /// the number of blocks). The student's state is matched to the teacher's through a learned
    /// linear projection when the widths differ. Default none.
    pub hidden_layers: Vec<[usize; 2]>,
    /// `mse` (mean squared difference over the teacher's width) | `cosine` (1 − cosine
    /// similarity). Default `mse`.
    pub hidden_loss: HiddenLossName,
    /// Weight of the hidden-state term, added to the loss per supervised position and layer
    /// pair. Default 1.
    pub hidden_weight: f64,
    /// A folder for the teacher cache: the teacher's top-`cache_top_k` log-probabilities at every
    /// supervised position of the training data, computed once before training (safetensors
    /// shards and a `manifest.json` fingerprinting teacher, data, `k` and temperature), then
    /// reused by this and later runs without loading the teacher. Relative to the working
    /// directory, as `output.dir`. Default none: the teacher runs at every step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_cache: Option<PathBuf>,
    /// With `teacher_cache`: how many of the teacher's most probable tokens are kept per
    /// position (≥ 1, at most the vocabulary); the rest of its mass is kept as one remainder,
    /// which the loss compares with the student's remainder as one outcome. Default 64.
    pub cache_top_k: usize,
    /// On-policy distillation (GKD's λ, TRL's `lmbda`): the probability, in [0, 1], that an
    /// optimizer step trains on the student's own samples — each row's prompt continued by the
    /// student, scored by the teacher, the divergence alone as the loss — instead of the data's
    /// completions. Drawn per step from `train.seed` and the step. Default 0: never (the run is
    /// exactly the run without this key).
    pub on_policy: f64,
    /// On-policy steps: most tokens the student generates per row (≥ 1; fewer where prompt and
    /// sample would exceed `data.seq_len`); a sample also ends at the student's EOS. Default 32.
    pub on_policy_max_new_tokens: usize,
    /// On-policy steps: the sampling temperature of the student's samples (≥ 0; 0 is greedy).
    /// Not the loss's `temperature`. Default 1.
    pub on_policy_temperature: f64,
    /// On-policy steps: nucleus sampling, the smallest set of most likely tokens holding this
    /// much probability, in (0, 1]; 1 keeps every token. Default 1.
    pub on_policy_top_p: f64,
}

/// The distance of `[distill] hidden_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HiddenLossName {
    /// Mean squared difference.
    #[default]
    Mse,
    /// One minus the cosine similarity.
    Cosine,
}

impl Default for DistillSection {
    fn default() -> Self {
        Self {
            loss: LossName::ForwardKl,
            kd_ratio: 0.5,
            temperature: 1.0,
            beta: None,
            alpha: None,
            uld_top_k: None,
            hidden_layers: Vec::new(),
            hidden_loss: HiddenLossName::Mse,
            hidden_weight: 1.0,
            teacher_cache: None,
            cache_top_k: 64,
            on_policy: 0.0,
            on_policy_max_new_tokens: DEFAULT_ON_POLICY_MAX_NEW_TOKENS,
            on_policy_temperature: 1.0,
            on_policy_top_p: 1.0,
        }
    }
}

impl DistillSection {
    /// The loss this section describes (checked by [`DistillConfig::validate`]).
    pub fn spec(&self) -> KdSpec {
        let divergence = match self.loss {
            LossName::ForwardKl => Divergence::ForwardKl,
            LossName::ReverseKl => Divergence::ReverseKl,
            LossName::Jsd => Divergence::Jsd { beta: self.beta.unwrap_or(0.5) },
            LossName::SkewKl => Divergence::SkewKl { alpha: self.alpha.unwrap_or(0.1) },
            LossName::SkewReverseKl => Divergence::SkewReverseKl { alpha: self.alpha.unwrap_or(0.1) },
            LossName::Uld => Divergence::Uld { top_k: self.uld_top_k.unwrap_or(DEFAULT_ULD_TOP_K) },
        };
        KdSpec { divergence, temperature: self.temperature, kd_ratio: self.kd_ratio }
    }

    /// How the student samples on on-policy steps (checked by [`DistillConfig::validate`]).
    pub fn on_policy_sampling(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.on_policy_temperature as f32,
            top_p: self.on_policy_top_p as f32,
            ..SamplingConfig::default()
        }
    }
}

/// Whether the TOML file at `path` is a distillation config (it has a `[teacher]` or `[distill]`
/// section).
pub fn is_distill_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.contains_key("teacher") || value.contains_key("distill"))
}

impl DistillConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`), then validates. Relative data
    /// paths are relative to the config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: DistillConfig = read_toml(path, overrides)?;
        let student = cfg.student().with_paths_relative_to(path.parent().unwrap_or(Path::new(".")));
        cfg.data = student.data;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The student's part: the `graft train` config of the same run.
    pub fn student(&self) -> TrainConfig {
        TrainConfig {
            model: self.model.clone(),
            adapter: self.adapter.clone(),
            data: self.data.clone(),
            train: self.train.clone(),
            output: self.output.clone(),
        }
    }

    /// Checks the student's sections as `graft train` does, then the teacher and the loss,
    /// naming the key.
    pub fn validate(&self) -> Result<()> {
        self.student().validate()?;
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        if self.teacher.model.trim().is_empty() {
            return bad("teacher.model", "is required (an asset name, a .gguf file or a Hugging Face folder)".into());
        }
        if let Some(dtype) = &self.teacher.dtype {
            crate::device::parse_dtype(dtype)?;
        }
        let d = &self.distill;
        if !(0.0..=1.0).contains(&d.kd_ratio) {
            return bad("distill.kd_ratio", format!("must be in [0, 1], got {}", d.kd_ratio));
        }
        if !(d.temperature.is_finite() && d.temperature > 0.0) {
            return bad("distill.temperature", format!("must be a positive number, got {}", d.temperature));
        }
        if !(d.hidden_weight.is_finite() && d.hidden_weight >= 0.0) {
            return bad("distill.hidden_weight", format!("must be a number ≥ 0, got {}", d.hidden_weight));
        }
        if d.hidden_layers.iter().flatten().any(|&l| l == 0) {
            return bad("distill.hidden_layers", "layers count blocks from 1 (the output of the first block)".into());
        }
        match (d.loss, d.beta, d.alpha) {
            (LossName::Jsd, Some(b), _) if !(0.0..=1.0).contains(&b) => {
                return bad("distill.beta", format!("must be in [0, 1], got {b}"));
            }
            (LossName::SkewKl | LossName::SkewReverseKl, _, Some(a)) if !(0.0..1.0).contains(&a) => {
                return bad("distill.alpha", format!("must be in [0, 1), got {a}"));
            }
            (l, Some(_), _) if l != LossName::Jsd => {
                return bad("distill.beta", "only applies to loss = \"jsd\"".into());
            }
            (LossName::ForwardKl | LossName::ReverseKl | LossName::Jsd | LossName::Uld, _, Some(_)) => {
                return bad("distill.alpha", "only applies to loss = \"skew_kl\" or \"skew_reverse_kl\"".into());
            }
            _ => {}
        }
        self.validate_on_policy()?;
        self.validate_cache()?;
        self.validate_uld()
    }

    /// The `on_policy*` checks: ranges, then what an on-policy step cannot be combined with.
    fn validate_on_policy(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let d = &self.distill;
        if !(d.on_policy.is_finite() && (0.0..=1.0).contains(&d.on_policy)) {
            return bad("distill.on_policy", format!("must be a share in [0, 1], got {}", d.on_policy));
        }
        if d.on_policy_max_new_tokens == 0 {
            return bad("distill.on_policy_max_new_tokens", "must be at least 1".into());
        }
        if !(d.on_policy_temperature.is_finite() && d.on_policy_temperature >= 0.0) {
            return bad(
                "distill.on_policy_temperature",
                format!("must be a number ≥ 0 (0 = greedy), got {}", d.on_policy_temperature),
            );
        }
        if !(d.on_policy_top_p.is_finite() && d.on_policy_top_p > 0.0 && d.on_policy_top_p <= 1.0) {
            return bad("distill.on_policy_top_p", format!("must be in (0, 1], got {}", d.on_policy_top_p));
        }
        if d.on_policy == 0.0 {
            return Ok(());
        }
        let refused = |why: &str| bad("distill.on_policy", why.into());
        if d.teacher_cache.is_some() {
            return refused(
                "cannot be combined with distill.teacher_cache: the cache holds the teacher on the data's \
                 sequences only, and on-policy steps train on sequences the student generates during the run; \
                 drop one of the two",
            );
        }
        if d.loss == LossName::Uld {
            return refused(
                "cannot be combined with loss = \"uld\": the student's samples would have to be re-rendered \
                 with the teacher's tokenizer and re-paired, which is not built; use a teacher with the \
                 student's tokenizer",
            );
        }
        if self.data.packing {
            return refused(
                "cannot be combined with data.packing = true: a packed row mixes several examples and has no \
                 single prompt for the student to continue",
            );
        }
        Ok(())
    }

    /// The `teacher_cache` / `cache_top_k` checks: what a cached teacher cannot provide is
    /// refused with the reason.
    fn validate_cache(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let d = &self.distill;
        if d.cache_top_k == 0 {
            return bad("distill.cache_top_k", "must be at least 1");
        }
        if d.teacher_cache.is_none() {
            return Ok(());
        }
        if !cache_supports(d.loss) {
            return bad("distill.teacher_cache", "this distill.loss cannot be computed from a top-k teacher");
        }
        if !d.hidden_layers.is_empty() {
            return bad(
                "distill.teacher_cache",
                "cannot be combined with distill.hidden_layers: hidden-state distillation needs the teacher's \
                 hidden states at every step, which the cache does not hold (it keeps only the top-k \
                 log-probabilities); drop one of the two",
            );
        }
        if self.data.packing {
            return bad(
                "distill.teacher_cache",
                "cannot be combined with data.packing: packed rows mix examples differently every epoch, \
                 while the cache holds each example's positions on their own",
            );
        }
        if self.data.replay.is_some() {
            return bad(
                "distill.teacher_cache",
                "cannot be combined with data.replay (the cache covers data.train only)",
            );
        }
        Ok(())
    }

    /// The checks of `loss = "uld"`: `uld_top_k` only with it and ≥ 1; no hidden-state pairs and
    /// no packing, since the two tokenizations share no positions but the paired answer tokens
    /// of each example.
    fn validate_uld(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let d = &self.distill;
        if d.loss != LossName::Uld {
            if d.uld_top_k.is_some() {
                return bad("distill.uld_top_k", "only applies to loss = \"uld\"");
            }
            return Ok(());
        }
        if d.uld_top_k == Some(0) {
            return bad("distill.uld_top_k", "must be at least 1");
        }
        if !d.hidden_layers.is_empty() {
            return bad(
                "distill.hidden_layers",
                "does not apply to loss = \"uld\" (the two tokenizations share no positions)",
            );
        }
        if self.data.packing {
            return bad("data.packing", "must be false with distill.loss = \"uld\" (answers are paired per example)");
        }
        Ok(())
    }
}

/// Whether the loss `loss` can be computed from a cached top-k teacher (`ops::lm_head_kd_sparse`).
pub fn cache_supports(loss: LossName) -> bool {
    match loss {
        LossName::ForwardKl | LossName::ReverseKl | LossName::Jsd | LossName::SkewKl | LossName::SkewReverseKl => true,
        // The cache holds the teacher's distribution at the student's positions, in the student's
        // vocabulary; ULD pairs positions of two tokenizations.
        LossName::Uld => false,
    }
}
