//! `graft selftest`: checks a device against the CPU on seeded random weights.

use anyhow::{bail, Result};
use clap::{Args as ClapArgs, ValueEnum};
use graft::device::{parse_device, parse_dtype};
use graft::parity::{compare, ParityShape, ParitySpec, Side, Tolerance};

/// Compare a device against a reference (the CPU) on the same seeded random weights.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  graft selftest --device cuda --json\n  \
graft selftest --device cpu --dtypes bf16 --reference-dtype f32 --shape tiny\n\n\
Each dtype runs the same computations on both sides: logits of the inference forward, the\n\
LoRA training loss and every LoRA gradient (r 8, all seven projections), and the loss curve of\n\
--train-steps AdamW steps. Differences are max |delta| / max |reference| (gradients: relative\n\
L2 error), judged against tight limits when both sides compute in f32/f64 and loose ones\n\
when either uses bf16/f16 (docs/gpu.md lists them).\n\
The exit status is 1 when a check fails.")]
pub struct Args {
    /// Device to check: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Dtypes to check the device in, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    dtypes: Vec<String>,
    /// Device of the reference side.
    #[arg(long, default_value = "cpu")]
    reference_device: String,
    /// Dtype of the reference side (default: the dtype being checked).
    #[arg(long)]
    reference_dtype: Option<String>,
    /// Model shapes: `default` (SmolLM2-135M) or `tiny` (two small layers, for quick runs).
    #[arg(long, value_enum, default_value_t = Shape::Default)]
    shape: Shape,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Sequences.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// AdamW steps of the compared LoRA training curve (0 = skip).
    #[arg(long, default_value_t = 5)]
    train_steps: usize,
    /// Seed of the weights and token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Limits: `auto` (by dtype), `tight` or `loose`.
    #[arg(long, value_enum, default_value_t = Strictness::Auto)]
    tolerance: Strictness,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shape {
    Default,
    Tiny,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Strictness {
    Auto,
    Tight,
    Loose,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let device = parse_device(&args.device)?;
    let reference_device = parse_device(&args.reference_device)?;
    let spec = ParitySpec {
        shape: match args.shape {
            Shape::Default => ParityShape::Default,
            Shape::Tiny => ParityShape::Tiny,
        },
        seq: args.seq,
        batch: args.batch,
        train_steps: args.train_steps,
        seed: args.seed,
        ..ParitySpec::default()
    };
    let tolerance = match args.tolerance {
        Strictness::Auto => None,
        Strictness::Tight => Some(Tolerance::Tight),
        Strictness::Loose => Some(Tolerance::Loose),
    };
    let mut reports = Vec::new();
    for name in &args.dtypes {
        let dtype = parse_dtype(name)?;
        let ref_dtype = match &args.reference_dtype {
            Some(d) => parse_dtype(d)?,
            None => dtype,
        };
        eprintln!("checking {} {name} against {} {}...", args.device, args.reference_device, ref_dtype.as_str());
        let reference = Side { device: reference_device.clone(), dtype: ref_dtype };
        let subject = Side { device: device.clone(), dtype };
        let r = compare(&reference, &subject, &spec, tolerance)?;
        for c in &r.checks {
            eprintln!(
                "  {:<13} rel {:.3e} (max |delta| {:.3e}, scale {:.3e}), limit {:.0e}: {}",
                c.name,
                c.rel,
                c.max_abs,
                c.scale,
                c.limit,
                if c.pass { "ok" } else { "FAIL" }
            );
        }
        reports.push(r);
    }
    let pass = reports.iter().all(|r| r.pass);
    if args.json {
        let out = serde_json::json!({
            "pass": pass,
            "cuda_built": graft::device::cuda_built(),
            "runs": reports,
        });
        println!("{out}");
    } else {
        for r in &reports {
            println!(
                "{} {} vs {} {}: {}",
                r.device,
                r.dtype,
                r.reference_device,
                r.reference_dtype,
                if r.pass { "pass" } else { "FAIL" }
            );
        }
    }
    if !pass {
        let failed: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.checks
                    .iter()
                    .filter(|c| !c.pass)
                    .map(move |c| format!("{} {} ({:.3e} > {:.0e})", r.dtype, c.name, c.rel, c.limit))
            })
            .collect();
        bail!("parity check failed: {}", failed.join(", "));
    }
    Ok(())
}
