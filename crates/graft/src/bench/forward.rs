//! Forward-only throughput: one inference forward (no gradients, no KV cache reuse) over a
//! `[batch, seq]` block of tokens, producing logits for every position.

use super::{median, Repeats};
use crate::eval::perplexity::sum_nll;
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

/// The result of [`bench_forward`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardBench {
    /// Tokens per row.
    pub seq: usize,
    /// Rows per forward.
    pub batch: usize,
    /// Median of `seq · batch / seconds` over the timed runs.
    pub tokens_per_s: f64,
    /// Seconds of every timed run.
    pub run_secs: Vec<f64>,
    /// Mean next-token NLL over the block (a sanity check that the model computes language,
    /// comparable with the reference's eval loss on the same text).
    pub mean_loss: f64,
}

/// Times `model.forward_infer` on `rows` (`batch` rows of `seq` ids each).
pub fn bench_forward(
    model: &dyn Model,
    rows: &[Vec<u32>],
    repeats: Repeats,
    on_run: &mut dyn FnMut(usize, f64),
) -> Result<ForwardBench> {
    let batch = rows.len();
    let seq = rows.first().map_or(0, Vec::len);
    if batch == 0 || seq < 2 || rows.iter().any(|r| r.len() != seq) || repeats.runs == 0 {
        return Err(GraftError::Input(
            "a forward benchmark needs at least 1 run and equal rows of at least 2 tokens".into(),
        ));
    }
    let flat: Vec<u32> = rows.concat();
    let ids = Tensor::from_vec(flat, (batch, seq), model.device())?;
    let mut run_secs = Vec::with_capacity(repeats.runs);
    let mut last = None;
    for i in 0..repeats.warmup + repeats.runs {
        let start = Instant::now();
        let logits = model.forward_infer(&ids, &mut model.new_cache())?;
        // Make sure lazy devices have finished before the clock stops.
        model.device().synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        if i >= repeats.warmup {
            on_run(i - repeats.warmup, secs);
            run_secs.push(secs);
        }
        last = Some(logits);
    }
    let mut nll = 0.0;
    if let Some(logits) = last {
        for (b, row) in rows.iter().enumerate() {
            nll += sum_nll(&logits.get(b)?.narrow(0, 0, seq - 1)?, &row[1..])?;
        }
    }
    let tokens = (seq * batch) as f64;
    Ok(ForwardBench {
        seq,
        batch,
        tokens_per_s: median(&run_secs.iter().map(|s| tokens / s).collect::<Vec<_>>()),
        run_secs,
        mean_loss: nll / ((seq - 1) * batch) as f64,
    })
}
