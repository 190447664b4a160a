//! The TOML schema of `graft compare`: one task, the techniques to run on it, and their shared
//! budget. Every section rejects unknown keys; docs/compare.md lists every key with its default.

use crate::features::{HeadConfig, Pooling};
use crate::prompting::PromptTemplate;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A transfer technique `graft compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    /// The instruction alone, label scoring.
    ZeroShot,
    /// The instruction after `few_shot.k` solved train examples.
    FewShot,
    /// A head (`probe.head`) on frozen decoder features from layer `probe.layer`.
    LinearProbe,
    /// A head on decoder features with the top `probe.unfreeze_top` blocks trained too.
    DecoderHead,
    /// A head on frozen sentence embeddings of the encoder `probe.encoder`.
    EncoderProbe,
    /// Soft prompt tuning (learned virtual input tokens; the model frozen).
    SoftPrompt,
    /// Prefix tuning (learned per-layer key/value prefixes; the model frozen).
    Prefix,
    /// LoRA on every attention and MLP projection.
    Lora,
    /// Full fine-tuning: every weight trains.
    Full,
    /// The same architecture from random weights, full training with the same budget.
    Scratch,
}

impl Technique {
    /// The snake_case name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ZeroShot => "zero_shot",
            Self::FewShot => "few_shot",
            Self::LinearProbe => "linear_probe",
            Self::DecoderHead => "decoder_head",
            Self::EncoderProbe => "encoder_probe",
            Self::SoftPrompt => "soft_prompt",
            Self::Prefix => "prefix",
            Self::Lora => "lora",
            Self::Full => "full",
            Self::Scratch => "scratch",
        }
    }

    /// Whether it learns from the train split (and so belongs on a learning curve).
    pub fn trains(self) -> bool {
        !matches!(self, Self::ZeroShot)
    }
}

/// Tasks `graft compare` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// Three-class tweet sentiment (the `tweets` asset), accuracy and macro-F1.
    Sentiment,
}

/// A whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CompareConfig {
    /// The task and its split.
    pub task: TaskSection,
    /// The pretrained decoder every technique starts from.
    pub model: ModelSection,
    /// Techniques to run, in order. Default: all ten.
    pub techniques: Vec<Technique>,
    /// How the task is put to the model (zero-shot, few-shot and the fine-tuning data).
    pub prompt: PromptTemplate,
    /// k-shot prompting.
    pub few_shot: FewShotSection,
    /// Feature extraction techniques.
    pub probe: ProbeSection,
    /// Budget and settings of the techniques that train the decoder.
    pub train: CompareTrainSection,
    /// Learning-curve mode.
    pub learning_curve: CurveSection,
    /// Where results go.
    pub output: CompareOutput,
}

/// `[task]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSection {
    /// Task. Default `sentiment`.
    pub name: TaskName,
    /// Training examples drawn from the corpus. Default 500.
    pub n_train: usize,
    /// Held-out examples every technique is scored on. Default 200.
    pub n_test: usize,
    /// Seed of the split, the shots, initialisation and shuffling. Default 42.
    pub seed: u64,
}

impl Default for TaskSection {
    fn default() -> Self {
        Self { name: TaskName::Sentiment, n_train: 500, n_test: 200, seed: 42 }
    }
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Asset name, `.gguf` file or Hugging Face folder. Default `smollm2-135m-instruct`.
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`. Default `cpu`.
    pub device: String,
    /// `f32`, `bf16`, `f16` or `f64`. Default `f32`.
    pub dtype: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { name: crate::assets::DEFAULT_MODEL.into(), device: "cpu".into(), dtype: "f32".into() }
    }
}

/// `[few_shot]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FewShotSection {
    /// Solved examples shown before each question (classes take turns). Default 3.
    pub k: usize,
    /// Contextual calibration: divide each label's probability by the one the prompt gives to
    /// content-free inputs, removing the prompt's bias towards some label. Default false.
    pub calibrate: bool,
}

impl Default for FewShotSection {
    fn default() -> Self {
        Self { k: 3, calibrate: false }
    }
}

/// `[probe]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSection {
    /// Encoder of `encoder_probe` (asset name or folder). Default `all-minilm-l6-v2`.
    pub encoder: String,
    /// Decoder blocks run for `linear_probe` features (absent: all blocks and the final norm).
    pub layer: Option<usize>,
    /// `last` (the state where the answer would start) or `mean` pooling of the decoder states
    /// of the chat prompt. Default `last`.
    pub pooling: Pooling,
    /// Decoder blocks trained by `decoder_head` (with the final norm and the head). Default 2.
    pub unfreeze_top: usize,
    /// The classification head: kind (`linear` or `mlp`), epochs, batch size, lr, weight decay.
    pub head: HeadConfig,
}

impl Default for ProbeSection {
    fn default() -> Self {
        Self {
            encoder: "all-minilm-l6-v2".into(),
            layer: None,
            pooling: Pooling::Last,
            unfreeze_top: 2,
            head: HeadConfig::default(),
        }
    }
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareTrainSection {
    /// Optimizer steps of every technique that trains the decoder. Default 40.
    pub steps: u64,
    /// Examples per step. Default 8.
    pub batch_size: usize,
    /// Tokens per example (longer ones are truncated). Default 160.
    pub seq_len: usize,
    /// Linear warm-up steps. Default 4.
    pub warmup_steps: u64,
    /// Held-out batches for the training runs' eval loss (0 = all). Default 5.
    pub eval_batches: usize,
    /// Recompute decoder blocks in backward (less memory, more time). Default false.
    pub gradient_checkpointing: bool,
    /// LoRA rank. Default 8.
    pub r: usize,
    /// LoRA α. Default 16.
    pub alpha: f64,
    /// Virtual tokens of the soft prompt and the prefix. Default 20.
    pub num_virtual_tokens: usize,
    /// Peak learning rate per technique.
    pub lr: LrSection,
}

impl Default for CompareTrainSection {
    fn default() -> Self {
        Self {
            steps: 40,
            batch_size: 8,
            seq_len: 160,
            warmup_steps: 4,
            eval_batches: 5,
            gradient_checkpointing: false,
            r: 8,
            alpha: 16.0,
            num_virtual_tokens: 20,
            lr: LrSection::default(),
        }
    }
}

/// `[train.lr]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrSection {
    /// Default 1e-3.
    pub lora: f64,
    /// Default 5e-5.
    pub full: f64,
    /// Default 1e-3.
    pub scratch: f64,
    /// Default 3e-2.
    pub soft_prompt: f64,
    /// Default 1e-2.
    pub prefix: f64,
}

impl Default for LrSection {
    fn default() -> Self {
        Self { lora: 1e-3, full: 5e-5, scratch: 1e-3, soft_prompt: 3e-2, prefix: 1e-2 }
    }
}

/// `[learning_curve]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurveSection {
    /// Shares of the train split to train on (each in (0, 1]); empty turns the mode off.
    /// Default empty.
    pub fractions: Vec<f64>,
    /// Techniques trained at each fraction. Default `["lora", "scratch"]`.
    pub techniques: Vec<Technique>,
}

impl Default for CurveSection {
    fn default() -> Self {
        Self { fractions: Vec::new(), techniques: vec![Technique::Lora, Technique::Scratch] }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareOutput {
    /// Folder for the report and every technique's run. Default `runs/compare`.
    pub dir: PathBuf,
}

impl Default for CompareOutput {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs/compare") }
    }
}

/// Every technique, in the order a default comparison runs them (cheapest first).
pub const ALL_TECHNIQUES: [Technique; 10] = [
    Technique::ZeroShot,
    Technique::FewShot,
    Technique::LinearProbe,
    Technique::EncoderProbe,
    Technique::DecoderHead,
    Technique::SoftPrompt,
    Technique::Prefix,
    Technique::Lora,
    Technique::Full,
    Technique::Scratch,
];

/// Whether the TOML file at `path` is a comparison config: it has a `[task]` section or a
/// top-level `techniques` list, which `graft train` configs never have.
pub fn is_compare_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.contains_key("task") || value.contains_key("techniques"))
}

impl CompareConfig {
    /// Reads `path`, applies `--set section.key=value` overrides, fills the default technique
    /// list and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
        let mut value: toml::Value =
            toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
        for o in overrides {
            crate::config::apply_override(&mut value, o)?;
        }
        let cfg: CompareConfig =
            value.try_into().map_err(|e: toml::de::Error| GraftError::Input(format!("{}: {e}", path.display())))?;
        cfg.resolved()
    }

    /// The config with defaults filled in (an empty technique list means all of them), checked.
    pub fn resolved(mut self) -> Result<Self> {
        if self.techniques.is_empty() {
            self.techniques = ALL_TECHNIQUES.to_vec();
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks what serde cannot, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(GraftError::Input(format!("compare config key `{key}`: {why}")));
        if self.task.n_train == 0 || self.task.n_test == 0 {
            return bad("task.n_train / task.n_test", "must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(t) = self.techniques.iter().find(|t| !seen.insert(**t)) {
            return bad("techniques", format!("`{}` is listed twice", t.name()));
        }
        if self.techniques.contains(&Technique::FewShot) && self.few_shot.k == 0 {
            return bad("few_shot.k", "must be at least 1 (zero shots is the zero_shot technique)".into());
        }
        let t = &self.train;
        if t.steps == 0 || t.batch_size == 0 || t.seq_len < 8 {
            return bad("train.steps / train.batch_size / train.seq_len", "must be at least 1 / 1 / 8".into());
        }
        let lrs = [t.lr.lora, t.lr.full, t.lr.scratch, t.lr.soft_prompt, t.lr.prefix];
        if lrs.iter().any(|lr| !(lr.is_finite() && *lr > 0.0)) {
            return bad("train.lr.*", "every learning rate must be a positive number".into());
        }
        if let Some(f) = self.learning_curve.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return bad("learning_curve.fractions", format!("{f} is not in (0, 1]"));
        }
        if let Some(t) = self.learning_curve.techniques.iter().find(|t| !t.trains()) {
            return bad("learning_curve.techniques", format!("`{}` does not learn from data", t.name()));
        }
        self.prompt.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CompareConfig> {
        let cfg: CompareConfig = toml::from_str(text).map_err(|e| GraftError::Input(e.to_string()))?;
        cfg.resolved()
    }

    #[test]
    fn empty_config_runs_every_technique() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.techniques, ALL_TECHNIQUES.to_vec());
        assert!(cfg.learning_curve.fractions.is_empty());
    }

    #[test]
    fn head_kind_is_written_as_an_inline_table() {
        let cfg = parse("[probe.head]\nkind = { type = \"mlp\", hidden = 64 }\nepochs = 3\n").unwrap();
        assert_eq!(cfg.probe.head.kind, crate::features::HeadKind::Mlp { hidden: 64 });
        assert_eq!(cfg.probe.head.epochs, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = parse("[train]\nstepz = 3").unwrap_err().to_string();
        assert!(e.contains("stepz"), "{e}");
        let e = parse("techniques = [\"lora\", \"lora\"]").unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse("techniques = [\"telepathy\"]").unwrap_err().to_string();
        assert!(e.contains("telepathy"), "{e}");
        let e = parse("[learning_curve]\nfractions = [0.0, 1.0]").unwrap_err().to_string();
        assert!(e.contains("learning_curve.fractions"), "{e}");
        let e = parse("[learning_curve]\nfractions = [0.5]\ntechniques = [\"zero_shot\"]").unwrap_err().to_string();
        assert!(e.contains("does not learn"), "{e}");
        let e = parse("[prompt]\ninstruction = \"no slot\"").unwrap_err().to_string();
        assert!(e.contains("{text}"), "{e}");
    }
}
