//! The fine-tuning configuration file (`graft train CONFIG.toml`).
//!
//! Every section rejects unknown keys, so a typo is an error rather than a silently ignored
//! setting. Each field's doc comment is its documentation; defaults are in the `Default`
//! impls and repeated in docs/configuration.md. `graft distill`'s config ([`distill`]) is this one
//! plus a `[teacher]` and a `[distill]` section.

pub mod continual;
pub mod distill;
pub mod multitask;

use crate::data::{source, DataFormat};
use crate::models::llama::KeepLayers;
use crate::train::schedule::ScheduleKind;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Which pretrained model, on which device and precision.
    pub model: ModelSection,
    /// How the model is adapted.
    pub adapter: AdapterSection,
    /// Training and evaluation data.
    pub data: DataSection,
    /// Optimisation.
    pub train: TrainSection,
    /// Where results go.
    pub output: OutputSection,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Asset name, `.gguf` file or Hugging Face folder. Default `smollm2-135m-instruct`.
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`. Default `cpu`.
    pub device: String,
    /// Compute precision: `f32`, `bf16`, `f16` or `f64`. Default `f32`.
    pub dtype: String,
    /// `pretrained` (the model's weights) or `random` (the same architecture and tokenizer with
    /// freshly initialised weights, seeded by `train.seed`: the from-scratch baseline that
    /// shows what pretraining buys). Default `pretrained`.
    pub init: ModelInit,
    /// Build a smaller student from the model: keep only these decoder blocks, initialised from
    /// its weights and renumbered `0..n` (the DistilBERT recipe). A list of block indices,
    /// strictly increasing (`[0, 2, 4]`), or every N-th block from an offset
    /// (`{ every = 2, offset = 0 }`: blocks 0, 2, 4, …). Default: every block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_layers: Option<KeepLayers>,
    /// Grow the model by this many new decoder blocks (block expansion, as in LLaMA Pro):
    /// new block `k` of `N` goes after original block `⌊k·L/N⌋ − 1` (one after every `L/N`-th
    /// block when `N` divides the model's `L` blocks; the last after the last block), a copy of
    /// the block before it with `o_proj` and `down_proj` zeroed, so the grown model computes
    /// exactly what the model does until it trains. Train only the new blocks with
    /// `adapter.kind = "expanded"`. From 1 to the model's block count; not with `keep_layers`,
    /// `from_run` or `init = "random"`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expand_blocks: Option<usize>,
    /// Start from a finished earlier run (its run directory, relative to the config file): a
    /// second stage, such as task fine-tuning after continued pretraining. Its model (full
    /// fine-tuning) or its base with its LoRA adapter replaces `model.name`, `init` and
    /// `keep_layers`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_run: Option<PathBuf>,
    /// With `from_run` of a LoRA run: `merge` (fold its adapter into the base, then attach this
    /// config's adapter) or `keep` (continue training its adapter; this config's `adapter.r`,
    /// `alpha` and `targets` are then the earlier run's). Default `merge`.
    pub from_run_adapter: FromRunAdapter,
}

/// What a second stage does with the earlier run's LoRA adapter (`model.from_run_adapter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FromRunAdapter {
    /// Fold it into the base weights; this config's adapter trains on the merged model.
    #[default]
    Merge,
    /// Keep it attached and continue training it.
    Keep,
}

/// Where a run's starting weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelInit {
    /// The pretrained weights of `model.name`.
    #[default]
    Pretrained,
    /// Random weights of the same shapes (training from scratch).
    Random,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            name: crate::assets::DEFAULT_MODEL.into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            init: ModelInit::Pretrained,
            keep_layers: None,
            expand_blocks: None,
            from_run: None,
            from_run_adapter: FromRunAdapter::Merge,
        }
    }
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// LoRA on a dense (dequantized) base.
    Lora,
    /// LoRA on the base kept in its quantized GGUF blocks.
    Qlora,
    /// Full fine-tuning: every weight trains.
    None,
    /// Only the modules matching `adapter.targets` train; everything else is frozen.
    Freeze,
    /// Soft prompt tuning: `adapter.num_virtual_tokens` learned input embeddings before every
    /// sequence; the model is frozen.
    #[serde(rename = "prompt_tuning")]
    PromptTuning,
    /// Prefix tuning: learned keys and values before every layer's own; the model is frozen.
    #[serde(rename = "prefix_tuning")]
    PrefixTuning,
    /// Block expansion: only the blocks `model.expand_blocks` adds train (and, with
    /// `adapter.expanded_norms`, every norm); the model's own blocks are frozen.
    Expanded,
}

/// `[adapter]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterSection {
    /// `lora` | `qlora` | `none` (full fine-tuning) | `freeze` | `prompt_tuning` |
    /// `prefix_tuning` | `expanded` (the blocks `model.expand_blocks` adds). Default `lora`.
    pub kind: AdapterKind,
    /// LoRA rank. Default 8.
    pub r: usize,
    /// LoRA α (scale = α/r). Default 16.
    pub alpha: f64,
    /// Dropout on the adapter input. Default 0.
    pub dropout: f64,
    /// Module patterns, PEFT-style (suffix match, or `*` globs). For `freeze`, the weights that
    /// train (matched against HF tensor names). Default: all attention and MLP projections.
    pub targets: Vec<String>,
    /// rsLoRA scaling α/√r. Default false.
    pub rslora: bool,
    /// Prompt / prefix tuning: number of virtual tokens. Default 20.
    pub num_virtual_tokens: usize,
    /// Prompt tuning: start the soft prompt from the embeddings of this text's tokens (repeated
    /// or cut to `num_virtual_tokens`); when absent, from randomly drawn vocabulary rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_init_text: Option<String>,
    /// With `kind = "expanded"`: also train every RMSNorm weight of the model's own blocks and
    /// the final norm (the new blocks' norms train anyway). Default false.
    pub expanded_norms: bool,
}

impl Default for AdapterSection {
    fn default() -> Self {
        Self {
            kind: AdapterKind::Lora,
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            rslora: false,
            num_virtual_tokens: 20,
            prompt_init_text: None,
            expanded_norms: false,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training JSONL file (required): a path (relative paths are relative to the config
    /// file), or `dataset:NAME/FILE`, a file graft builds from a named dataset into its cache on
    /// first use (`dataset:tweets/chat.train.jsonl`; docs/data.md lists them).
    pub train: PathBuf,
    /// Evaluation JSONL file (a path or `dataset:NAME/FILE`); when absent, `eval_fraction` of
    /// the training file is held out.
    pub eval: Option<PathBuf>,
    /// `text` | `prompt_completion` | `messages` | `alpaca`. Default `text`.
    pub format: DataFormat,
    /// Tokens per sample (longer samples are truncated). Default 256.
    pub seq_len: usize,
    /// Pack samples into full rows of `seq_len`. Default false.
    pub packing: bool,
    /// Share of the training file held out for evaluation, in [0, 1); must be above 0 when
    /// `eval` is not set, and is not used when it is. Default 0.1.
    pub eval_fraction: f64,
    /// Replay of general data against forgetting while training on a domain: a share of the
    /// training examples drawn from another file (`{ path = "dataset:austen/text.train.jsonl",
    /// share = 0.2 }`). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySection>,
}

/// `data.replay`: general examples mixed into the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// JSONL file of the replayed data (a path, relative to the config file, or
    /// `dataset:NAME/FILE`).
    pub path: PathBuf,
    /// Share of the training examples that come from `path`, in (0, 1): `n_domain · share /
    /// (1 − share)` of its examples, drawn once by `train.seed`, join the domain examples.
    pub share: f64,
    /// Format of `path`. Default `text`.
    #[serde(default = "text_format")]
    pub format: DataFormat,
}

fn text_format() -> DataFormat {
    DataFormat::Text
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            eval: None,
            format: DataFormat::Text,
            seq_len: 256,
            packing: false,
            eval_fraction: 0.1,
            replay: None,
        }
    }
}

/// Update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer steps; overrides `epochs` when set.
    pub max_steps: Option<u64>,
    /// Passes over the training data when `max_steps` is not set. Default 1.
    pub epochs: u64,
    /// Peak learning rate. Default 2e-4.
    pub lr: f64,
    /// Samples per micro-batch. Default 4.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub grad_accum: usize,
    /// `adamw` | `sgd`. Default `adamw`.
    pub optimizer: OptimizerName,
    /// Weight decay. Default 0.
    pub weight_decay: f64,
    /// AdamW β₁. Default 0.9.
    pub beta1: f64,
    /// AdamW β₂. Default 0.999.
    pub beta2: f64,
    /// AdamW ε. Default 1e-8.
    pub eps: f64,
    /// SGD momentum. Default 0.9.
    pub momentum: f64,
    /// `constant` | `linear` | `cosine`. Default `cosine`.
    pub schedule: ScheduleKind,
    /// Linear warm-up steps. Default 0.
    pub warmup_steps: u64,
    /// Global gradient-norm clip (0 = off). Default 1.0.
    pub max_grad_norm: f64,
    /// Seed for initialisation, shuffling and dropout. Default 42.
    pub seed: u64,
    /// Evaluate every N steps (0 = only at the start and end). Default 0.
    pub eval_every: u64,
    /// Checkpoint every N steps (0 = only at the end). Default 0.
    pub save_every: u64,
    /// Cap on evaluation batches (0 = all). Default 0.
    pub eval_batches: usize,
    /// Recompute each decoder block during backward instead of keeping its activations: far
    /// less memory for about a third more compute. Default false.
    pub gradient_checkpointing: bool,
    /// What gradient checkpointing keeps: `blocks` (each block's input; default) or `nested`
    /// (every few blocks' inputs; each block's attention and MLP halves recomputed on their own,
    /// one sequence at a time: least memory, slower). Gradients are the same either way.
    pub checkpoint_mode: crate::ops::CheckpointMode,
    /// Products through frozen weights (base projections, a frozen LM head) and, in full
    /// fine-tuning, through the trained ones: `f32`, or `bf16-mixed` (bf16 products with f32
    /// sums, f32 master weights and optimizer state) on CPUs with AVX-512 BF16, f32 elsewhere.
    /// Default `f32`.
    pub precision: crate::ops::MatmulPrecision,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            max_steps: None,
            epochs: 1,
            lr: 2e-4,
            batch_size: 4,
            grad_accum: 1,
            optimizer: OptimizerName::Adamw,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            seed: 42,
            eval_every: 0,
            save_every: 0,
            eval_batches: 0,
            gradient_checkpointing: false,
            checkpoint_mode: crate::ops::CheckpointMode::Blocks,
            precision: crate::ops::MatmulPrecision::F32,
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Run directory. Default `runs/latest`.
    pub dir: PathBuf,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs/latest") }
    }
}

impl AdapterSection {
    /// The prompt-learning adapter this section describes, for `prompt_tuning` / `prefix_tuning`.
    pub fn prompt_spec(&self) -> Option<crate::adapters::prompt::PromptSpec> {
        use crate::adapters::prompt::{PromptInit, PromptKind, PromptSpec};
        let kind = match self.kind {
            AdapterKind::PromptTuning => PromptKind::PromptTuning,
            AdapterKind::PrefixTuning => PromptKind::PrefixTuning,
            _ => return None,
        };
        let init = self.prompt_init_text.clone().map_or(PromptInit::Random, PromptInit::Text);
        Some(PromptSpec { kind, num_virtual_tokens: self.num_virtual_tokens, init })
    }
}

impl TrainConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`, value in TOML syntax; bare
    /// words are taken as strings), then validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let cfg: TrainConfig = read_toml(path, overrides)?;
        // Relative data paths are relative to the config file.
        let cfg = cfg.with_paths_relative_to(path.parent().unwrap_or(Path::new(".")));
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn with_paths_relative_to(mut self, base: &Path) -> Self {
        self.data.train = relative_to(base, &self.data.train);
        self.data.eval = self.data.eval.as_ref().map(|p| relative_to(base, p));
        self.model.from_run = self.model.from_run.as_ref().map(|p| relative_to(base, p));
        if let Some(r) = self.data.replay.as_mut() {
            r.path = relative_to(base, &r.path);
        }
        self
    }

    /// Checks values that serde cannot (ranges, required paths), naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let t = &self.train;
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("train.lr", format!("must be a positive number, got {}", t.lr));
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1".into());
        }
        if t.grad_accum == 0 {
            return bad("train.grad_accum", "must be at least 1".into());
        }
        if t.max_steps == Some(0) || (t.max_steps.is_none() && t.epochs == 0) {
            return bad("train.max_steps", "must be at least 1 (or set train.epochs ≥ 1)".into());
        }
        if t.weight_decay < 0.0 || t.max_grad_norm < 0.0 {
            return bad("train.weight_decay / train.max_grad_norm", "must not be negative".into());
        }
        if matches!(self.adapter.kind, AdapterKind::Lora | AdapterKind::Qlora) {
            if self.adapter.r == 0 {
                return bad("adapter.r", "must be at least 1".into());
            }
            if !(self.adapter.alpha.is_finite() && self.adapter.alpha > 0.0) {
                return bad("adapter.alpha", format!("must be positive, got {}", self.adapter.alpha));
            }
            if !(0.0..1.0).contains(&self.adapter.dropout) {
                return bad("adapter.dropout", format!("must be in [0, 1), got {}", self.adapter.dropout));
            }
        }
        if let Some(spec) = self.adapter.prompt_spec() {
            spec.validate()?;
        }
        if let Some(keep) = &self.model.keep_layers {
            keep.check()?;
        }
        self.validate_expansion()?;
        if self.model.init == ModelInit::Random && self.adapter.kind != AdapterKind::None {
            return bad(
                "model.init",
                "`random` trains from scratch, which needs adapter.kind = \"none\" (every weight trains)".into(),
            );
        }
        if self.model.from_run_adapter == FromRunAdapter::Keep
            && !matches!(self.adapter.kind, AdapterKind::Lora | AdapterKind::Qlora)
        {
            return bad(
                "model.from_run_adapter",
                "`keep` continues training the earlier run's LoRA adapter, which needs adapter.kind = \"lora\" or \"qlora\"".into(),
            );
        }
        if self.data.train.as_os_str().is_empty() {
            return bad("data.train", "is required (a JSONL file, or dataset:NAME/FILE)".into());
        }
        if let Err(e) = source::check_format(&self.data.train, self.data.format) {
            return bad("data.train", e.to_string());
        }
        if let Some(Err(e)) = self.data.eval.as_ref().map(|p| source::check_format(p, self.data.format)) {
            return bad("data.eval", e.to_string());
        }
        if let Some(r) = &self.data.replay {
            if !(r.share > 0.0 && r.share < 1.0) {
                return bad("data.replay.share", format!("must be in (0, 1), got {}", r.share));
            }
            if let Err(e) = source::check_format(&r.path, r.format) {
                return bad("data.replay.path", e.to_string());
            }
        }
        if self.data.seq_len < 2 {
            return bad("data.seq_len", "must be at least 2".into());
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) {
            return bad("data.eval_fraction", format!("must be in [0, 1), got {}", self.data.eval_fraction));
        }
        if self.data.eval.is_none() && self.data.eval_fraction == 0.0 {
            return bad(
                "data.eval_fraction",
                "is 0 but data.eval is not set: the run is evaluated on held-out data, so hold out a share \
                 of the training file (e.g. 0.1) or set data.eval"
                    .into(),
            );
        }
        Ok(())
    }

    /// The combinations of block expansion (`model.expand_blocks`, `adapter.kind = "expanded"`)
    /// that are refused: a count of 0; together with `keep_layers`, `from_run` or
    /// `init = "random"`; a low-rank or prompt adapter on the grown model (the new blocks start
    /// as identities whose zeroed output projections an adapter would have to fill through its
    /// own zero-initialised factor, and a QLoRA base is not trainable); `kind = "expanded"`
    /// without `expand_blocks`; `expanded_norms` with another kind.
    fn validate_expansion(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        let kind = self.adapter.kind;
        if self.adapter.expanded_norms && kind != AdapterKind::Expanded {
            return bad("adapter.expanded_norms", "applies only to adapter.kind = \"expanded\"");
        }
        let Some(n) = self.model.expand_blocks else {
            if kind == AdapterKind::Expanded {
                return bad(
                    "adapter.kind",
                    "\"expanded\" trains the blocks model.expand_blocks adds: set model.expand_blocks = N",
                );
            }
            return Ok(());
        };
        crate::models::llama::BlockExpansion::check(n)?;
        let key = crate::models::llama::expand::KEY;
        if self.model.keep_layers.is_some() {
            return bad(key, "cannot be combined with model.keep_layers (grow or shrink the model, not both)");
        }
        if self.model.from_run.is_some() {
            return bad(
                key,
                "cannot be combined with model.from_run: grow the model in the first stage (a later stage \
                 trains the grown model as a whole)",
            );
        }
        if self.model.init == ModelInit::Random {
            return bad(
                key,
                "grows a pretrained model by identity blocks; with init = \"random\" there is nothing to keep",
            );
        }
        if !matches!(kind, AdapterKind::Expanded | AdapterKind::None | AdapterKind::Freeze) {
            return bad(
                key,
                "needs adapter.kind = \"expanded\" (train the new blocks), \"none\" or \"freeze\": LoRA, QLoRA \
                 and prompt adapters do not train the new blocks themselves, whose zeroed projections keep \
                 them identities",
            );
        }
        Ok(())
    }

    /// The keys whose values differ between two configs, as `section.key` (for resume checks).
    pub fn differing_keys(&self, other: &TrainConfig) -> Vec<String> {
        differing_keys(self, other)
    }
}

/// The keys whose values differ between two configs of one schema, as `section.key`.
pub fn differing_keys<T: Serialize>(this: &T, other: &T) -> Vec<String> {
    let a = toml::Value::try_from(this).ok();
    let b = toml::Value::try_from(other).ok();
    let mut out = Vec::new();
    if let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (a, b) {
        for (section, av) in &a {
            let bv = b.get(section);
            match (av, bv) {
                (toml::Value::Table(at), Some(toml::Value::Table(bt))) => {
                    let keys: std::collections::BTreeSet<&String> = at.keys().chain(bt.keys()).collect();
                    for k in keys {
                        if at.get(k) != bt.get(k) {
                            out.push(format!("{section}.{k}"));
                        }
                    }
                }
                _ if Some(av) != bv => out.push(section.clone()),
                _ => {}
            }
        }
    }
    out
}

/// `p` resolved against `base` unless it is empty, absolute, a `dataset:` reference or exists
/// as given.
pub(crate) fn relative_to(base: &Path, p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() || p.is_absolute() || source::is_dataset_ref(p) || p.exists() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads the TOML file `path`, applies `overrides` (`section.key=value`) and deserializes it.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let mut value: toml::Value =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    value.try_into().map_err(|e: toml::de::Error| GraftError::Input(format!("{}: {e}", path.display())))
}

/// Applies one `section.key=value` override to a parsed config.
pub(crate) fn apply_override(root: &mut toml::Value, item: &str) -> Result<()> {
    let (path, raw) =
        item.split_once('=').ok_or_else(|| GraftError::Input(format!("--set `{item}`: expected section.key=value")))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = path.trim().split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| GraftError::Input(format!("--set `{item}`: `{part}` is not inside a table")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}
