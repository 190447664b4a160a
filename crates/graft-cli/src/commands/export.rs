//! `graft export`: write a finished run in a format the rest of the ecosystem loads.

use anyhow::Result;
use graft::recipes::export::{self, ExportFormat};
use std::path::PathBuf;

/// Export a run as a PEFT adapter, a merged Hugging Face folder, a merged GGUF or a llama.cpp
/// LoRA adapter GGUF, then read it back and check it: against the trained model, or for a merged
/// GGUF against the trained weights rounded to its tensor type (bit-identical tensors, same
/// logits).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  graft export runs/quickstart --format peft --out exports/sentiment-adapter
  graft export runs/quickstart --format merged --out exports/sentiment-hf
  graft export runs/quickstart --format gguf --gguf-type q8_0 --out exports/merged/sentiment.gguf
  graft export runs/quickstart --format gguf-lora --out exports/lora/adapter.gguf

GGUF exports also write an Ollama `Modelfile` in the same folder (FROM the merged GGUF, or FROM
the base GGUF's file name plus ADAPTER for gguf-lora; TEMPLATE for ChatML chat templates; stop
tokens). Then: ollama create sentiment -f exports/merged/Modelfile
A gguf-lora adapter runs on the base GGUF: llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --lora adapter.gguf")]
pub struct Args {
    /// The run directory (output.dir of `graft train`).
    pub run_dir: PathBuf,
    /// peft | merged | gguf | gguf-lora.
    #[arg(long)]
    pub format: String,
    /// Where to write the export.
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of a GGUF export: f32, f16 or q8_0 (gguf-lora: f32 or f16).
    #[arg(long, default_value = "f16")]
    pub gguf_type: String,
    /// Print the check result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let Some(format) = ExportFormat::from_name(&args.format) else {
        super::bail_input!("unknown --format `{}`: use peft, merged, gguf or gguf-lora", args.format);
    };
    let gguf_type = match args.gguf_type.as_str() {
        "f32" => candle_core::quantized::GgmlDType::F32,
        "f16" => candle_core::quantized::GgmlDType::F16,
        "q8_0" if format == ExportFormat::GgufLora => {
            super::bail_input!("--gguf-type q8_0: a GGUF LoRA adapter is stored as f32 or f16")
        }
        "q8_0" => candle_core::quantized::GgmlDType::Q8_0,
        other => super::bail_input!("unknown --gguf-type `{other}`: use f32, f16 or q8_0"),
    };
    eprintln!("exporting {} as {}", args.run_dir.display(), args.format);
    let report = export::export(&args.run_dir, format, &args.out, gguf_type)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let c = &report.check;
        println!(
            "wrote {}; read back against {}: max |Δlogit| {:.2e} (allowed {:.0e}); against the trained model: \
             max |Δlogit| {:.2e}, same most likely token at {:.0}% of the check prompt's positions",
            report.path.display(),
            c.reference,
            c.max_abs_logit_diff,
            c.tolerance,
            report.max_abs_logit_diff,
            report.top1_agreement * 100.0
        );
        if let Some(m) = &report.modelfile {
            println!("wrote {} (ollama create NAME -f {})", m.display(), m.display());
        }
    }
    Ok(())
}
