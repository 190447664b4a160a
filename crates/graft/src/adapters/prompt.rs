//! Prompt learning: soft prompt tuning and prefix tuning on a frozen model.
//!
//! Soft prompt tuning learns `n` input embeddings placed before every sequence; prefix tuning
//! learns `n` keys and values per layer placed before every layer's own (PEFT's
//! `prefix_projection = false`: the prefix itself is the parameter). Initialisation follows
//! PEFT: a soft prompt starts from the embeddings of a text (tokenized, repeated or cut to `n`,
//! PEFT's `TEXT`) or of `n` vocabulary rows drawn with the run's seed (`SAMPLE_VOCAB`); a prefix
//! starts from standard normal values (PEFT's default, an `nn.Embedding` initialisation).

use crate::models::llama::{Llama, VirtualTokens};
use crate::models::Model;
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Name of the trainable tensor, as PEFT stores it in `adapter_model.safetensors`.
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

/// Which kind of virtual tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// Learned input embeddings (PEFT `PROMPT_TUNING`).
    PromptTuning,
    /// Learned per-layer keys and values (PEFT `PREFIX_TUNING`).
    PrefixTuning,
}

impl PromptKind {
    /// PEFT's `peft_type` string.
    pub fn peft_type(self) -> &'static str {
        match self {
            Self::PromptTuning => "PROMPT_TUNING",
            Self::PrefixTuning => "PREFIX_TUNING",
        }
    }
}

/// How a new adapter's values are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInit {
    /// Embeddings of this text's tokens, repeated or cut to `n` (soft prompts only).
    Text(String),
    /// Embeddings of `n` vocabulary rows drawn with the seed (soft prompts), or standard normal
    /// values (prefixes).
    Random,
}

/// The shape and initialisation of a prompt-learning adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpec {
    /// Soft prompt or prefix.
    pub kind: PromptKind,
    /// Number of virtual tokens `n` (≥ 1).
    pub num_virtual_tokens: usize,
    /// Initial values.
    pub init: PromptInit,
}

impl PromptSpec {
    /// PEFT's `prompt_tuning_init` for this spec.
    pub fn peft_init(&self) -> &'static str {
        match (&self.init, self.kind) {
            (PromptInit::Text(_), _) => "TEXT",
            (PromptInit::Random, PromptKind::PromptTuning) => "SAMPLE_VOCAB",
            (PromptInit::Random, PromptKind::PrefixTuning) => "RANDOM",
        }
    }

    /// Checks `n` and the init text are usable.
    pub fn validate(&self) -> Result<()> {
        if self.num_virtual_tokens == 0 {
            return Err(GraftError::Input("config key `adapter.num_virtual_tokens`: must be at least 1".into()));
        }
        match &self.init {
            PromptInit::Text(t) if t.trim().is_empty() => {
                Err(GraftError::Input("config key `adapter.prompt_init_text`: must not be empty (leave it out for a random start)".into()))
            }
            PromptInit::Text(_) if self.kind == PromptKind::PrefixTuning => Err(GraftError::Input(
                "config key `adapter.prompt_init_text`: only `prompt_tuning` starts from a text; remove it for `prefix_tuning`".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A prompt-learning adapter attached to a model.
#[derive(Debug, Clone)]
pub struct PromptAdapter {
    /// What it is.
    pub spec: PromptSpec,
    /// The trainable tensor, in PEFT's layout (`[n, hidden]` or `[n, layers·2·kv_heads·head_dim]`).
    pub var: Var,
}

impl PromptAdapter {
    /// The trainable variables by name (one: [`PROMPT_EMBEDDINGS`]).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        vec![(PROMPT_EMBEDDINGS.to_string(), self.var.clone())]
    }
}

/// Token ids for `n` virtual tokens from `text`, as PEFT's `TEXT` init picks them.
pub fn init_token_ids(tokenizer: &Tokenizer, text: &str, n: usize) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(text, true).map_err(|e| GraftError::Input(format!("adapter.prompt_init_text: {e}")))?;
    if ids.is_empty() {
        return Err(GraftError::Input("config key `adapter.prompt_init_text`: tokenizes to no tokens".into()));
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

/// Creates the adapter of `spec` (seeded by `seed`), sets it on `model` (whose weights stay
/// frozen) and returns it.
pub fn attach(model: &mut Llama, spec: &PromptSpec, tokenizer: &Tokenizer, seed: u64) -> Result<PromptAdapter> {
    spec.validate()?;
    let n = spec.num_virtual_tokens;
    let (device, dtype) = (model.device().clone(), crate::adapters::lora::master_dtype(model.dtype()));
    let init = match (spec.kind, &spec.init) {
        (PromptKind::PromptTuning, init) => {
            let ids = match init {
                PromptInit::Text(text) => init_token_ids(tokenizer, text, n)?,
                PromptInit::Random => {
                    let vocab = model.config().vocab_size as u32;
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    (0..n).map(|_| rng.random_range(0..vocab)).collect()
                }
            };
            let ids = Tensor::from_vec(ids, n, &device)?;
            model.embedding_rows(&ids)?.detach()
        }
        (PromptKind::PrefixTuning, _) => {
            let dims = VirtualTokens::expected_dims(true, n, model.config());
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let values: Vec<f32> = (0..dims[0] * dims[1]).map(|_| standard_normal(&mut rng)).collect();
            Tensor::from_vec(values, (dims[0], dims[1]), &device)?.to_dtype(dtype)?
        }
    };
    from_tensor(model, spec.clone(), &init)
}

/// Sets `values` (PEFT layout) as a trainable adapter of `spec` on `model`.
pub fn from_tensor(model: &mut Llama, spec: PromptSpec, values: &Tensor) -> Result<PromptAdapter> {
    // f32 master weights when the model computes in half precision (cast in each forward).
    let var = Var::from_tensor(
        &values.to_dtype(crate::adapters::lora::master_dtype(model.dtype()))?.to_device(model.device())?,
    )?;
    let tokens = match spec.kind {
        PromptKind::PromptTuning => VirtualTokens::Prompt(var.as_tensor().clone()),
        PromptKind::PrefixTuning => VirtualTokens::Prefix(var.as_tensor().clone()),
    };
    model.set_virtual_tokens(Some(tokens))?;
    Ok(PromptAdapter { spec, var })
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
