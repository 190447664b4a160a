//! Training throughput: optimizer steps of LoRA, QLoRA or full fine-tuning on packed chunks of a
//! text, measured the way the PyTorch + PEFT reference is (docs/benchmarks.md): consecutive
//! `seq`-token chunks, step `i` takes chunks `i·batch ..` (wrapping), loss = mean next-token NLL
//! inside each chunk, AdamW (β 0.9/0.999, ε 1e-8, no weight decay), `warmup` untimed steps then
//! `steps` timed ones; tokens/s = `seq · batch · steps / time of the timed steps`.
//!
//! Each step is the causal-LM objective's loss through the trainer's step helper
//! ([`accumulate_and_step`]), timed one by one around a device synchronisation.

use super::cpu::CpuSnapshot;
use crate::adapters::lora::{self, LoraSpec};
use crate::data::Batch;
use crate::models::llama::Llama;
use crate::objectives::causal_lm::causal_lm_loss;
use crate::ops::{with_matmul_precision, CheckpointMode, MatmulPrecision};
use crate::train::optim::{AdamWConfig, Optimizer, OptimizerKind};
use crate::train::step::accumulate_and_step;
use crate::{GraftError, Result};
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

/// What trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    /// LoRA r 8, α 16 on the seven projections of every layer, dense frozen base.
    Lora,
    /// The same LoRA over a base kept in GGUF-quantized blocks (load the model quantized).
    Qlora,
    /// Every weight trains.
    Full,
}

impl TrainMode {
    /// The reference learning rate for the mode (PEFT LoRA 2e-4, full 2e-5).
    pub fn default_lr(self) -> f64 {
        match self {
            TrainMode::Lora | TrainMode::Qlora => 2e-4,
            TrainMode::Full => 2e-5,
        }
    }
}

/// The projections the benchmark's LoRA adapts (PEFT's `target_modules` of the reference).
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// The shape of a training benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainBenchSpec {
    /// What trains.
    pub mode: TrainMode,
    /// Tokens per chunk.
    pub seq: usize,
    /// Chunks per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of the LoRA initialisation.
    pub seed: u64,
    /// Recompute blocks in backward instead of keeping their activations.
    pub gradient_checkpointing: bool,
    /// What checkpointing keeps (with `gradient_checkpointing`).
    pub checkpoint_mode: CheckpointMode,
    /// Precision of the products through the model's weights.
    pub precision: MatmulPrecision,
}

/// The result of [`bench_train`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainBench {
    /// What trained.
    pub mode: TrainMode,
    /// Tokens per chunk.
    pub seq: usize,
    /// Chunks per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup_steps: usize,
    /// `seq · batch · steps / seconds of the timed steps`.
    pub tokens_per_s: f64,
    /// Milliseconds of every timed step.
    pub step_ms: Vec<f64>,
    /// Loss of every step, warm-up included.
    pub losses: Vec<f64>,
    /// Loss of the first step.
    pub loss_first: f64,
    /// Loss of the last step.
    pub loss_last: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Whether blocks were recomputed in backward.
    pub gradient_checkpointing: bool,
    /// What checkpointing kept: `blocks` or `nested` (with `gradient_checkpointing`).
    pub checkpoint_mode: CheckpointMode,
    /// The precision that ran: `bf16-mixed` only where the CPU has the kernel.
    pub precision: MatmulPrecision,
    /// Learning rate.
    pub lr: f64,
    /// Whole `seq`-token chunks the text gave.
    pub train_chunks_available: usize,
    /// Percent of the machine's CPU other processes used during each timed step.
    pub run_other_cpu_pct: Vec<Option<f64>>,
}

/// One step's chunks as a batch: targets are the next token inside the chunk, the last position
/// of each chunk is not a target.
fn batch_at(chunks: &[&[u32]], step: usize, batch: usize, device: &candle_core::Device) -> Result<Batch> {
    let seq = chunks[0].len();
    let (mut ids, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for j in 0..batch {
        let chunk = chunks[(step * batch + j) % chunks.len()];
        ids.extend_from_slice(chunk);
        targets.extend_from_slice(&chunk[1..]);
        targets.push(0);
        mask.extend((0..seq).map(|i| if i + 1 < seq { 1f32 } else { 0.0 }));
    }
    let t = |v: Vec<u32>| Tensor::from_vec(v, (batch, seq), device);
    Ok(Batch {
        ids: t(ids)?,
        targets: t(targets)?,
        mask: Tensor::from_vec(mask, (batch, seq), device)?,
        n_targets: batch * (seq - 1),
        n_tokens: batch * seq,
    })
}

/// Makes `model` trainable as `spec.mode` says and times optimizer steps on chunks of `ids`.
/// `on_step(step, loss, seconds)` reports every step (warm-up included).
pub fn bench_train(
    model: &mut Llama,
    ids: &[u32],
    spec: &TrainBenchSpec,
    on_step: &mut dyn FnMut(usize, f64, f64),
) -> Result<TrainBench> {
    if spec.seq < 2 || spec.batch == 0 || spec.steps == 0 {
        return Err(GraftError::Input("a training benchmark needs seq >= 2, batch >= 1 and steps >= 1".into()));
    }
    let chunks: Vec<&[u32]> = ids.chunks_exact(spec.seq).collect();
    if chunks.is_empty() {
        return Err(GraftError::Input(format!(
            "the text has {} tokens, fewer than one chunk of {}",
            ids.len(),
            spec.seq
        )));
    }
    if spec.mode == TrainMode::Qlora && !model.has_quantized() {
        return Err(GraftError::Input("qlora needs the base loaded quantized (--weights quantized)".into()));
    }
    let vars = match spec.mode {
        TrainMode::Lora | TrainMode::Qlora => {
            let lora_spec = LoraSpec {
                r: 8,
                alpha: 16.0,
                dropout: 0.0,
                rslora: false,
                targets: LORA_TARGETS.map(String::from).to_vec(),
            };
            lora::attach(model, &lora_spec, spec.seed)?.named_vars()
        }
        TrainMode::Full => model.make_trainable(|_| true)?,
    };
    model.set_gradient_checkpointing(spec.gradient_checkpointing);
    model.set_checkpoint_mode(spec.checkpoint_mode);
    let trainable_params = vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut optimizer = Optimizer::new(OptimizerKind::AdamW(adamw), vars)?;
    let device = crate::models::Model::device(model).clone();
    let (mut losses, mut step_ms, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..spec.warmup + spec.steps {
        let b = batch_at(&chunks, step, spec.batch, &device)?;
        let before = CpuSnapshot::take();
        let start = Instant::now();
        let stats = with_matmul_precision(spec.precision, || {
            accumulate_and_step(step as u64, &mut optimizer, 1, |_| causal_lm_loss(model, &b), 0.0, spec.lr)
        })?;
        device.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        on_step(step, stats.loss, secs);
        losses.push(stats.loss);
        if step >= spec.warmup {
            step_ms.push(secs * 1e3);
            others.push(before.zip(CpuSnapshot::take()).and_then(|(a, b)| a.other_pct(&b)));
        }
    }
    let timed_s: f64 = step_ms.iter().sum::<f64>() / 1e3;
    Ok(TrainBench {
        mode: spec.mode,
        seq: spec.seq,
        batch: spec.batch,
        steps: spec.steps,
        warmup_steps: spec.warmup,
        tokens_per_s: (spec.seq * spec.batch * spec.steps) as f64 / timed_s,
        step_ms,
        loss_first: losses[0],
        loss_last: *losses.last().unwrap_or(&f64::NAN),
        losses,
        trainable_params,
        gradient_checkpointing: spec.gradient_checkpointing,
        checkpoint_mode: spec.checkpoint_mode,
        precision: spec.precision.effective(),
        lr: spec.lr,
        train_chunks_available: chunks.len(),
        run_other_cpu_pct: others,
    })
}
