//! `graft generate`: text generation with a KV cache, streamed to stdout.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use graft::assets::ModelSource;
use graft::generate::{generate_text, GenerateOptions, SamplingConfig, StopStrings};
use graft::models::llama::{Llama, LoadOptions, WeightFormat};
use graft::tokenizer::{Message, Tokenizer};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// How projection weights are held (the `--weights` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// Dequantized to the model dtype: exact (matches the reference logits).
    Dense,
    /// Kept in the file's quantized blocks: less memory, faster decoding, slightly different logits.
    Quantized,
}

impl Weights {
    /// The library's weight format.
    pub fn format(self) -> WeightFormat {
        match self {
            Weights::Dense => WeightFormat::Dense,
            Weights::Quantized => WeightFormat::Quantized,
        }
    }

    /// The flag value, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Weights::Dense => "dense",
            Weights::Quantized => "quantized",
        }
    }
}

/// Which model to load and how (shared by `generate`, `eval` and `bench`).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: an asset name, a `.gguf` file or a Hugging Face model folder.
    #[arg(long, default_value = graft::assets::DEFAULT_MODEL)]
    pub model: String,
    /// Projection weights: `dense` (exact) or `quantized` (fast).
    #[arg(long, value_enum, default_value_t = Weights::Dense)]
    pub weights: Weights,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Activation and dense-weight precision: f32, f64, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Never download: fail if the model is not in the cache.
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// Device, dtype and weight format as load options.
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: graft::device::parse_device(&self.device)?,
            dtype: graft::device::parse_dtype(&self.dtype)?,
            format: self.weights.format(),
        })
    }

    /// Resolves `--model` to files.
    pub fn source(&self) -> Result<ModelSource> {
        Ok(graft::assets::resolve_model(&self.model, self.offline)?)
    }

    /// Resolves and loads the model, reporting the time taken on stderr.
    pub fn load(&self) -> Result<(ModelSource, Llama)> {
        let source = self.source()?;
        let start = Instant::now();
        let model = graft::models::load::load_causal_lm(&source, &self.load_options()?)
            .with_context(|| format!("loading model `{}`", self.model))?;
        eprintln!("loaded {} ({} weights) in {:.1}s", self.model, self.weights.name(), start.elapsed().as_secs_f64());
        Ok((source, model))
    }
}

/// A LoRA adapter run on top of the model without merging (`--adapter`, shared by `generate`,
/// `eval perplexity`, `eval summarize` and `eval qa`).
#[derive(Debug, Clone, Args)]
pub struct AdapterArgs {
    /// LoRA adapter to apply on top of --model (not merged): a PEFT adapter folder
    /// (adapter_config.json + adapter_model.safetensors: a run's `adapter/`, or one saved by
    /// PEFT), a `graft train` run folder (its `adapter/` is used), or a GGUF LoRA file from
    /// `graft export --format gguf-lora`.
    #[arg(long, value_name = "PATH")]
    pub adapter: Option<PathBuf>,
}

impl AdapterArgs {
    /// Checks that the adapter, if one was given, exists in a known form (before a model is
    /// loaded).
    pub fn check(&self) -> Result<()> {
        if let Some(path) = &self.adapter {
            graft::io::adapter::locate_adapter(path).with_context(|| format!("--adapter {}", path.display()))?;
        }
        Ok(())
    }

    /// Attaches the adapter, if one was given, after checking it fits the model.
    pub fn apply(&self, model: &mut Llama) -> Result<()> {
        if let Some(path) = &self.adapter {
            let at =
                graft::io::adapter::locate_adapter(path).with_context(|| format!("--adapter {}", path.display()))?;
            let set = graft::io::adapter::load_adapter(at.path(), model)
                .with_context(|| format!("loading adapter {}", at.path().display()))?;
            eprintln!(
                "adapter {}: LoRA r={} (scale {}) on {} projections",
                at.path().display(),
                set.spec.r,
                set.spec.scale(),
                set.layers.len()
            );
        }
        Ok(())
    }

    /// The adapter path for reports (JSON `null` without one).
    pub fn json(&self) -> serde_json::Value {
        self.adapter.as_ref().map_or(serde_json::Value::Null, |p| p.display().to_string().into())
    }
}

/// Generate text after a prompt.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft generate --prompt \"Once upon a time\" --max-new-tokens 64\n         \
graft generate --chat --prompt \"What is the capital of France?\" --temperature 0.7 --seed 1\n         \
graft generate --adapter runs/quickstart/adapter --chat --prompt \"Sentiment of: I love it\"")]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Render the prompt as a user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for `--chat` (the template's default when absent).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// How the next token is drawn.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Random seed (same seed, same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (not included in the output); repeatable.
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// The sampling flags of the commands that generate (`graft generate`, `graft data
/// teacher-answers`).
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens holding probability P (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalty for tokens already present (1 = none; transformers' repetition_penalty).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
}

impl SamplingArgs {
    /// The sampler settings these flags give.
    pub fn config(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
        }
    }
}

/// Runs `graft generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = args.sampling.config();
    sampling.validate()?;
    let stops = StopStrings::new(args.stop.clone())?;
    let (source, mut model) = args.model.load()?;
    args.adapter.apply(&mut model)?;
    let tok = Tokenizer::from_source(&source)?;

    let (prompt_text, prompt_ids) = if args.chat {
        let template = tok.chat_template().with_context(|| {
            format!("model `{}` has no chat template: drop --chat to use the prompt as plain text", args.model.model)
        })?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message { role: "system".into(), content: system.clone() });
        }
        messages.push(Message { role: "user".into(), content: args.prompt.clone() });
        let rendered = template.render(&messages, true)?;
        // The rendered text spells out the special tokens; they are matched, none are added.
        let ids = tok.encode(&rendered, false)?;
        (rendered, ids)
    } else {
        let ids = tok.encode(&args.prompt, true)?;
        (args.prompt.clone(), ids)
    };

    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        eos_ids: tok.eos_id().into_iter().collect(),
        ..GenerateOptions::default()
    };
    let detok = |ids: &[u32]| tok.decode(ids, true).map_err(graft::GraftError::from);
    let stdout = std::io::stdout();
    let stream = !args.json;
    let result = generate_text(&model, &detok, &prompt_ids, &opts, &stops, &mut |piece| {
        if stream {
            let mut out = stdout.lock();
            out.write_all(piece.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| graft::GraftError::io("<stdout>", e))?;
        }
        Ok(())
    })?;
    let g = &result.generation;
    if args.json {
        let report = serde_json::json!({
            "model": args.model.model,
            "adapter": args.adapter.json(),
            "weights": args.model.weights.name(),
            "device": args.model.device,
            "dtype": args.model.dtype,
            "prompt": prompt_text,
            "prompt_ids": g.prompt_ids,
            "new_ids": g.new_ids,
            "text": result.text,
            "stop_reason": g.stop_reason.as_str(),
            "prompt_tokens": g.prompt_ids.len(),
            "new_tokens": g.new_ids.len(),
            "prefill_secs": g.prefill_secs,
            "decode_secs": g.decode_secs,
            "prefill_tokens_per_s": g.prefill_tokens_per_s(),
            "decode_tokens_per_s": g.decode_tokens_per_s(),
            "temperature": opts.sampling.temperature,
            "top_k": opts.sampling.top_k,
            "top_p": opts.sampling.top_p,
            "repetition_penalty": opts.sampling.repetition_penalty,
            "seed": opts.seed,
            "threads": graft::device::cpu_threads(),
        });
        println!("{report}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, prefill {:.1} tok/s; {} new tokens, decode {:.1} tok/s; stop: {}]",
            g.prompt_ids.len(),
            g.prefill_tokens_per_s(),
            g.new_ids.len(),
            g.decode_tokens_per_s(),
            g.stop_reason.as_str()
        );
    }
    Ok(())
}
