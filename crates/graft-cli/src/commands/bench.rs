//! `graft bench`: generation and forward throughput (not tests: numbers to compare).

use super::generate::ModelArgs;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use graft::bench::{memory, prompt, Repeats};
use graft::models::llama::random::random_default_model_with;
use graft::models::llama::Llama;
use graft::models::Model;
use graft::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Measure throughput.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  graft bench generate --json\n  graft bench forward --seq 256 --batch 4 --json\n  graft bench train --mode lora --seq 256 --batch 4 --steps 10 --warmup 3 --text corpus.txt --json\n  graft bench depthwise --image 224 --batch 8 --json\n  graft bench matmul --tokens 1024 --json"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Greedy generation, batch 1: prefill and decode tokens/s.
    #[command(after_help = "Example: graft bench generate --weights quantized --runs 5 --json")]
    Generate(GenerateBenchArgs),
    /// One inference forward over seq x batch tokens (no gradients): tokens/s.
    #[command(after_help = "Example: graft bench forward --seq 256 --batch 4 --runs 3 --json")]
    Forward(ForwardBenchArgs),
    /// Optimizer steps of LoRA, QLoRA or full fine-tuning on packed chunks of a text: tokens/s,
    /// peak memory and the loss curve.
    #[command(
        after_help = "Example: graft bench train --mode lora --seq 256 --batch 4 --steps 10 --warmup 3 --text corpus.txt --json\n\n\
The text is tokenized and cut into consecutive chunks of --seq tokens; step i trains on chunks\n\
i*batch.. (wrapping). LoRA: r 8, alpha 16, dropout 0 on q,k,v,o,gate,up,down; AdamW (0.9, 0.999,\n\
1e-8, no weight decay), lr 2e-4 (full: 2e-5). --warmup steps are untimed; tokens/s = seq x batch\n\
x steps / time of the timed steps. qlora loads the base quantized (its GGUF blocks)."
    )]
    Train(TrainBenchArgs),
    /// The depthwise convolution op against candle's grouped convolution on every depthwise
    /// layer of EfficientNet-Lite0: milliseconds forward, and forward + backward.
    #[command(after_help = "Example: graft bench depthwise --image 224 --batch 8 --runs 5 --json\n\n\
Random inputs and kernels of each distinct layer shape (channels, feature-map side, kernel,\n\
stride) at the given image size; the backward computes the input's and the kernel's gradients.\n\
network_ms sums the 16 layers: grouped forward, op forward, grouped train, op train.")]
    Depthwise(DepthwiseBenchArgs),
    /// The products through a Llama's weights (each projection forward and its input gradient,
    /// an LM-head vocabulary slice) in f32 and in bf16-mixed precision: ms and GFLOP/s per shape.
    #[command(after_help = "Example: graft bench matmul --tokens 1024 --runs 5 --json\n\n\
        Shapes default to SmolLM2-135M (hidden 576, key/value 192, MLP 1536). bf16-mixed runs \
        as f32 on CPUs without AVX-512 BF16 (the report's `mixed_runs_as` says so).")]
    Matmul(MatmulBenchArgs),
    /// Image-classifier training steps on EfficientNet-Lite0 (every layer and a linear head):
    /// images/s and peak memory, the workload of scripts/vision_torch_bench.py.
    #[command(
        after_help = "Example: graft bench vision-train --mode full --image 64 --batch 32 --steps 10 --warmup 2 --json\n\n\
One fixed batch of random images (seeded) and 10 random labels; each step is a forward through\n\
the backbone and a linear head on its pooled features, cross-entropy, backward and AdamW (1e-3,\n\
weight decay 1e-2) on every convolution, batch-norm scale / shift and the head. full: frozen\n\
batch norm (fine-tuning); scratch: batch statistics, running statistics updated.\n\
images/s = batch / median step time. scripts/vision-speed.sh runs it beside PyTorch."
    )]
    VisionTrain(VisionTrainBenchArgs),
}

#[derive(Debug, Args)]
struct VisionTrainBenchArgs {
    /// `full` (frozen batch norm) or `scratch` (batch statistics).
    #[arg(long, default_value = "full")]
    mode: String,
    /// Side of the square input images.
    #[arg(long, default_value_t = 64)]
    image: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data type: f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Options every benchmark takes.
#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    model: ModelArgs,
    /// Random weights with the default model's shapes instead of a model file.
    #[arg(long)]
    random_init: bool,
    /// Seed of the random weights (with --random-init).
    #[arg(long, default_value_t = 0)]
    init_seed: u64,
    /// Text whose first tokens feed the model (default: a built-in English paragraph, repeated).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Busy share of the machine (percent, other processes) above which results are flagged
    /// `contaminated`, and below which the benchmark starts.
    #[arg(long, default_value_t = 10.0)]
    idle_threshold: f64,
    /// Seconds to wait for an idle machine before measuring (0 = start at once).
    #[arg(long, default_value_t = 300)]
    wait_idle: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GenerateBenchArgs {
    #[command(flatten)]
    common: Common,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated per run (EOS is masked so every run makes all of them).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
}

#[derive(Debug, Args)]
struct ForwardBenchArgs {
    #[command(flatten)]
    common: Common,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Sequences per forward.
    #[arg(long, default_value_t = 4)]
    batch: usize,
}

#[derive(Debug, Args)]
struct TrainBenchArgs {
    #[command(flatten)]
    common: Common,
    /// What trains: lora, qlora or full.
    #[arg(long, value_enum, default_value_t = Mode::Lora)]
    mode: Mode,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Chunks per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Learning rate (default: 2e-4 for LoRA/QLoRA, 2e-5 for full).
    #[arg(long)]
    lr: Option<f64>,
    /// Recompute each block in backward instead of keeping its activations (less memory).
    #[arg(long)]
    checkpointing: bool,
    /// With --checkpointing: `blocks` keeps each block's input; `nested` keeps every few blocks'
    /// inputs and recomputes each block's attention and MLP halves on their own (least memory,
    /// about one more forward per step).
    #[arg(long, default_value = "blocks", value_parser = graft::ops::CheckpointMode::parse)]
    checkpoint_mode: graft::ops::CheckpointMode,
    /// Products through the model's weights: f32, or bf16-mixed (bf16 products, f32 sums, on CPUs
    /// with AVX-512 BF16; f32 elsewhere, and the report says which ran).
    #[arg(long, default_value = "f32", value_parser = graft::ops::MatmulPrecision::parse)]
    precision: graft::ops::MatmulPrecision,
}

/// `--mode` of `graft bench train`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Lora,
    Qlora,
    Full,
}

impl Mode {
    fn library(self) -> graft::bench::TrainMode {
        match self {
            Mode::Lora => graft::bench::TrainMode::Lora,
            Mode::Qlora => graft::bench::TrainMode::Qlora,
            Mode::Full => graft::bench::TrainMode::Full,
        }
    }
}

#[derive(Debug, Args)]
struct MatmulBenchArgs {
    /// Rows of every product (tokens of a batch: 256 × 4).
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 576)]
    hidden: usize,
    /// Key / value projection width.
    #[arg(long, default_value_t = 192)]
    kv: usize,
    /// MLP width.
    #[arg(long, default_value_t = 1536)]
    mlp: usize,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DepthwiseBenchArgs {
    /// Side of the square input images (the feature-map sizes follow from it).
    #[arg(long, default_value_t = 224)]
    image: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data type: f32, bf16, f16 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// A loaded benchmark subject: the model, its token ids for the text, and facts to report.
struct Subject {
    model: Llama,
    ids: Vec<u32>,
    eos_ids: Vec<u32>,
    facts: serde_json::Value,
}

fn mb(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0)
}

impl Common {
    fn repeats(&self) -> Repeats {
        Repeats { warmup: self.warmup, runs: self.runs }
    }

    fn load(&self) -> Result<Subject> {
        let text = match &self.text {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            None => prompt::DEFAULT_TEXT.repeat(40),
        };
        let start = Instant::now();
        let (model, tok, origin) = if self.random_init {
            let model = random_default_model_with(&self.model.load_options()?, self.init_seed)?;
            // Real token ids when the default model's tokenizer is at hand; no download.
            let tok = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, true)
                .ok()
                .and_then(|s| Tokenizer::from_source(&s).ok());
            (model, tok, format!("random-init (SmolLM2-135M shapes, seed {})", self.init_seed))
        } else {
            let (source, model) = self.model.load()?;
            (model, Some(Tokenizer::from_source(&source)?), self.model.model.clone())
        };
        let load_secs = start.elapsed().as_secs_f64();
        let (ids, prompt_source) = match &tok {
            Some(t) => (t.encode(&text, false)?, "tokenizer"),
            None => (prompt::byte_ids(&text, model.info().vocab_size), "bytes (no tokenizer available)"),
        };
        let eos_ids: Vec<u32> = tok.as_ref().and_then(|t| t.eos_id()).into_iter().collect();
        let facts = serde_json::json!({
            "model": origin,
            "random_init": self.random_init,
            "weights": self.model.weights.name(),
            "device": self.model.device,
            "dtype": self.model.dtype,
            "threads": graft::device::cpu_threads(),
            "q4_1_kernel": graft::ops::q4_1_kernel_name(),
            "q4_1_rows_kernel": graft::ops::q4_1_rows_kernel_name(),
            "text": self.text.as_ref().map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
            "prompt_ids_from": prompt_source,
            "load_secs": load_secs,
            "rss_after_load_mb": mb(memory::current_rss_bytes()),
            "warmup": self.warmup,
            "timed_runs": self.runs,
        });
        if self.wait_idle > 0 {
            graft::bench::cpu::wait_for_idle(Duration::from_secs(self.wait_idle), self.idle_threshold, &mut |busy| {
                eprintln!("machine {busy:.0}% busy; waiting for it to be idle...");
            });
        }
        // Peak memory is measured from here: what the workload needs on top of the weights.
        memory::reset_peak_rss();
        Ok(Subject { model, ids, eos_ids, facts })
    }
}

/// Adds the load facts, peak memory and the contamination verdict to `report` and prints it.
fn print(
    common: &Common,
    mut report: serde_json::Value,
    facts: serde_json::Value,
    others: &[Option<f64>],
    summary: String,
) {
    let max_other = others.iter().flatten().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let contaminated = max_other.is_some_and(|m| m > common.idle_threshold);
    if contaminated {
        eprintln!(
            "WARNING: other processes used up to {:.0}% of the CPU during timed runs; the numbers are not reliable",
            max_other.unwrap_or(0.0)
        );
    }
    if let (Some(r), serde_json::Value::Object(f)) = (report.as_object_mut(), facts) {
        r.extend(f);
        r.insert("peak_rss_mb".into(), serde_json::json!(mb(memory::peak_rss_bytes())));
        r.insert("max_other_cpu_pct".into(), serde_json::json!(max_other));
        r.insert("contaminated".into(), serde_json::json!(contaminated));
    }
    let json = common.json;
    if json {
        println!("{report}");
    } else {
        println!("{summary}");
        println!(
            "model {}, weights {}, {} threads, peak RSS {} MB",
            report["model"], report["weights"], report["threads"], report["peak_rss_mb"]
        );
    }
}

/// Runs `graft bench ...`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Generate(a) => {
            let s = a.common.load()?;
            let prompt_ids = prompt::take_cycled(&s.ids, a.prompt_tokens)?;
            let r = graft::bench::bench_generate(
                &s.model,
                &prompt_ids,
                a.new_tokens,
                &s.eos_ids,
                a.common.repeats(),
                &mut |i, run| {
                    eprintln!(
                        "run {}: prefill {:.1} tok/s, decode {:.1} tok/s (other processes {:.0}% CPU)",
                        i + 1,
                        run.prefill_tokens_per_s,
                        run.decode_tokens_per_s,
                        run.other_cpu_pct.unwrap_or(0.0)
                    );
                },
            )?;
            let summary = format!(
                "generate: {} prompt + {} new tokens, median of {} runs: prefill {:.1} tok/s, decode {:.1} tok/s",
                r.prompt_tokens,
                r.new_tokens,
                r.runs.len(),
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s
            );
            let others: Vec<Option<f64>> = r.runs.iter().map(|run| run.other_cpu_pct).collect();
            let mut report = serde_json::to_value(&r)?;
            report["bench"] = "generate".into();
            print(&a.common, report, s.facts, &others, summary);
        }
        BenchCommand::Forward(a) => {
            let s = a.common.load()?;
            let rows = prompt::rows(&s.ids, a.seq, a.batch)?;
            let r = graft::bench::bench_forward(&s.model, &rows, a.common.repeats(), &mut |i, secs| {
                eprintln!("run {}: {:.2}s, {:.1} tok/s", i + 1, secs, (a.seq * a.batch) as f64 / secs);
            })?;
            let summary = format!(
                "forward {}x{}: median of {} runs {:.1} tok/s (mean loss {:.4})",
                r.seq,
                r.batch,
                r.run_secs.len(),
                r.tokens_per_s,
                r.mean_loss
            );
            let mut report = serde_json::to_value(&r)?;
            report["bench"] = "forward".into();
            print(&a.common, report, s.facts, &r.run_other_cpu_pct, summary);
        }
        BenchCommand::Train(mut a) => {
            let mode = a.mode.library();
            if mode == graft::bench::TrainMode::Qlora {
                a.common.model.weights = super::generate::Weights::Quantized;
            }
            let mut s = a.common.load()?;
            let spec = graft::bench::TrainBenchSpec {
                mode,
                seq: a.seq,
                batch: a.batch,
                steps: a.steps,
                warmup: a.common.warmup,
                lr: a.lr.unwrap_or(mode.default_lr()),
                seed: a.common.init_seed,
                gradient_checkpointing: a.checkpointing,
                checkpoint_mode: a.checkpoint_mode,
                precision: a.precision,
            };
            let total = spec.warmup + spec.steps;
            let r = graft::bench::bench_train(&mut s.model, &s.ids, &spec, &mut |i, loss, secs| {
                let tag = if i < spec.warmup { " (warm-up)" } else { "" };
                eprintln!(
                    "step {}/{total}: loss {loss:.4}, {:.0} ms, {:.1} tok/s{tag}",
                    i + 1,
                    secs * 1e3,
                    (spec.seq * spec.batch) as f64 / secs
                );
            })?;
            let summary = format!(
                "train {:?} {}x{}: {:.1} tok/s over {} timed steps; loss {:.4} -> {:.4}; {} trainable parameters",
                r.mode, r.seq, r.batch, r.tokens_per_s, r.steps, r.loss_first, r.loss_last, r.trainable_params
            );
            let mut report = serde_json::to_value(&r)?;
            report["bench"] = "train".into();
            print(&a.common, report, s.facts, &r.run_other_cpu_pct, summary);
        }
        BenchCommand::VisionTrain(a) => {
            let device = graft::device::parse_device(&a.device)?;
            let dtype = graft::device::parse_dtype(&a.dtype)?;
            let mode = match a.mode.as_str() {
                "full" => graft::bench::VisionTrainMode::Full,
                "scratch" => graft::bench::VisionTrainMode::Scratch,
                other => anyhow::bail!("--mode {other}: expected full or scratch"),
            };
            anyhow::ensure!(
                a.steps > 0 && a.batch > 0 && a.image >= 32,
                "--steps and --batch must be at least 1, --image at least 32"
            );
            memory::reset_peak_rss();
            let r = graft::bench::bench_vision_train(mode, a.image, a.batch, a.warmup, a.steps, &device, dtype)?;
            let peak = mb(memory::peak_rss_bytes());
            if a.json {
                let mut report = serde_json::to_value(&r)?;
                report["bench"] = "vision-train".into();
                report["device"] = a.device.clone().into();
                report["dtype"] = a.dtype.clone().into();
                report["threads"] = graft::device::cpu_threads().into();
                report["peak_rss_mb"] = serde_json::json!(peak);
                println!("{report}");
            } else {
                println!(
                    "EfficientNet-Lite0 {:?} training, {} images of {}x{}: {:.1} images/s ({:.3} s/step), loss {:.3} -> {:.3}, peak RSS {:?} MB",
                    r.mode, r.batch, r.image, r.image, r.images_per_s, r.step_s, r.loss_first, r.loss_last, peak
                );
            }
        }
        BenchCommand::Matmul(a) => {
            let shapes = graft::bench::llama_product_shapes(a.tokens, a.hidden, a.kv, a.mlp);
            let repeats = Repeats { warmup: a.warmup, runs: a.runs };
            let r = graft::bench::bench_matmul(&shapes, repeats, &mut |p| {
                let s = &p.shape;
                eprintln!(
                    "{} [{}x{}]·[{}x{}]: f32 {:.2} ms ({:.0} GFLOP/s), bf16-mixed {:.2} ms ({:.0} GFLOP/s), max rel diff {:.1e}",
                    s.name, s.m, s.k, s.k, s.n, p.f32_ms, p.gflops[0], p.mixed_ms, p.gflops[1], p.max_rel_diff
                );
            })?;
            let (f32_ms, mixed_ms) = r.products.iter().fold((0.0, 0.0), |(f, m), p| (f + p.f32_ms, m + p.mixed_ms));
            if a.json {
                let mut report = serde_json::to_value(&r)?;
                report["bench"] = "matmul".into();
                report["threads"] = graft::device::cpu_threads().into();
                println!("{report}");
            } else {
                println!(
                    "{} products of {} rows: f32 {f32_ms:.1} ms, bf16-mixed (runs as {}) {mixed_ms:.1} ms, {:.2}x",
                    r.products.len(),
                    a.tokens,
                    r.mixed_runs_as.name(),
                    f32_ms / mixed_ms
                );
            }
        }
        BenchCommand::Depthwise(a) => {
            let device = graft::device::parse_device(&a.device)?;
            let dtype = graft::device::parse_dtype(&a.dtype)?;
            let repeats = Repeats { warmup: a.warmup, runs: a.runs };
            let r = graft::bench::bench_depthwise(a.image, a.batch, &device, dtype, repeats, &mut |l| {
                let s = l.shape;
                eprintln!(
                    "{}ch {}x{} k{} s{} (x{}): forward {:.2} -> {:.2} ms, forward+backward {:.2} -> {:.2} ms",
                    s.channels,
                    s.size,
                    s.size,
                    s.kernel,
                    s.stride,
                    s.count,
                    l.grouped_forward_ms,
                    l.op_forward_ms,
                    l.grouped_train_ms,
                    l.op_train_ms
                );
            })?;
            let [gf, of, gt, ot] = r.network_ms;
            if a.json {
                let mut report = serde_json::to_value(&r)?;
                report["bench"] = "depthwise".into();
                report["device"] = a.device.clone().into();
                report["dtype"] = a.dtype.clone().into();
                report["threads"] = graft::device::cpu_threads().into();
                report["peak_rss_mb"] = serde_json::json!(mb(memory::peak_rss_bytes()));
                println!("{report}");
            } else {
                println!(
                    "depthwise layers of EfficientNet-Lite0, {} images of {}x{}: forward {gf:.1} ms (grouped conv2d) vs {of:.1} ms (op), \
                     forward+backward {gt:.1} ms vs {ot:.1} ms",
                    r.batch, r.image, r.image
                );
            }
        }
    }
    Ok(())
}
